"""File stems of row ids: plain ids kept, every other id a safe ASCII stem with a hash; stems are
deterministic and unique, also on case-insensitive file systems."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pipeline.errors import ExportError
from pipeline.export import names
from pipeline.export.names import file_stem, is_plain
from pipeline.export.plan import ExportPlan

SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


@pytest.mark.parametrize("row_id", ["822dd9673df10096", "img_001", "a.b-c", "x" * 100])
def test_plain_ids_are_their_own_stems(row_id):
    assert file_stem(row_id) == row_id


@pytest.mark.parametrize("row_id, readable", [
    ("photos/a dog", "photos_a_dog"), ("my cat#1", "my_cat_1"), ("Café ☕", "cafe"), ("CAT", "cat"),
    ("../../etc/passwd", "etc_passwd"), ("con", "con"), ("nul.txt", "nul.txt"), ("a--b", "a--b"),
    ("ends.", "ends"), ("☕", "id"), ("x" * 101, "x" * 64), (".hidden", "hidden"), ("-flag", "flag"),
])
def test_other_ids_get_a_readable_part_and_a_hash(row_id, readable):
    stem = file_stem(row_id)
    assert not is_plain(row_id)
    assert stem.rsplit("--", 1)[0] == readable and len(stem.rsplit("--", 1)[1]) == names.HASH_CHARS
    assert stem == file_stem(row_id)  # deterministic


@given(st.text(min_size=1, max_size=300))
def test_every_stem_is_a_safe_file_name(row_id):
    stem = file_stem(row_id)
    assert set(stem) <= SAFE and stem[0].isalnum() and not stem.endswith(".")
    assert len(stem) <= max(names.MAX_PLAIN, names.MAX_READABLE + 2 + names.HASH_CHARS)
    assert stem.split(".", 1)[0] not in {"con", "prn", "aux", "nul"}


@given(st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=80))
def test_stems_are_unique_ignoring_case(ids):
    stems = [file_stem(i).lower() for i in ids]
    assert len(set(stems)) == len(ids)


def test_a_stem_shared_by_two_ids_is_refused(monkeypatch):
    monkeypatch.setattr("pipeline.export.plan.file_stem", lambda row_id: "same")
    with pytest.raises(ExportError, match="ids 'a' and 'b' have one file name 'same'"):
        ExportPlan.build(["a", "b"], 0.1, "out")

"""Corpus files as real tools write them, end to end through ``daam-datasets run`` on the tiny model:
one case per kind of bad input, each checking the line the user sees and what is on disk — every
input row is one dataset row, one failure record (file, line, reason) or one counted blank."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from tests.conftest import FAST_ARGS

RUN = [*FAST_ARGS, "--max-failure-rate", "1"]


def _run(run_cli, corpus: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("run", "--prompts", corpus, "--output", out, *RUN, *extra)


def _accounted(stdout: str, rows: int, generated: int, failed: int, blank: int) -> None:
    """The summary line says how the input rows add up."""
    assert (f"{rows} input rows = {generated} prompts generated + {failed} prompts failed "
            f"+ {blank} blank rows skipped; ") in stdout, stdout


def _failures(out: Path) -> list[dict]:
    path = out / "_failures" / "read.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _dataset(out: Path) -> list[dict]:
    return list(load_dataset(str(out), split="train"))


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_spreadsheet_csv_with_bom_crlf_and_empty_rows(tmp_path, run_cli):
    corpus = tmp_path / "p.csv"
    corpus.write_bytes("\ufeffprompt,id,seed\r\na cat,c1,5\r\n\"a dog, running\",c2,7.0\r\n,,\r\n,,\r\n".encode("utf-8"))
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 4, 2, 0, 2)
    assert "2 rows written, 0 shards skipped (already done)" in out
    assert [(r["id"], r["prompt"], r["seed"]) for r in _dataset(tmp_path / "o")] == [("c1", "a cat", 5), ("c2", "a dog, running", 7)]


def test_csv_rows_with_more_or_fewer_fields_than_the_header(tmp_path, run_cli):
    corpus = tmp_path / "p.csv"
    corpus.write_text("prompt,id\na cat,1\na dog\na fox,3,extra\n", encoding="utf-8")
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 3, 1, 2, 0)
    assert [(f["line"], f["message"]) for f in _failures(tmp_path / "o")] == [
        (3, "row has 1 fields, the header has 2"), (4, "row has 3 fields, the header has 2")]
    assert [r["prompt"] for r in _dataset(tmp_path / "o")] == ["a cat"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_nulls_in_every_column(tmp_path, run_cli, fmt):
    columns = {"prompt": ["a cat", None, "a dog", None], "id": [None, None, "d", "k"],
               "seed": [None, 3, None, None], "negative_prompt": [None, None, None, None]}
    corpus = tmp_path / f"p.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table(columns, schema=pa.schema([("prompt", pa.string()), ("id", pa.string()),
                                                           ("seed", pa.int64()), ("negative_prompt", pa.string())])), corpus)
    else:
        _jsonl(corpus, [dict(zip(columns, values)) for values in zip(*columns.values())])
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 4, 2, 1, 1)
    rows = _dataset(tmp_path / "o")
    assert [r["prompt"] for r in rows] == ["a cat", "a dog"] and rows[1]["id"] == "d"
    assert [r["negative_prompt"] for r in rows] == ["", ""]
    assert [(f["line"], f["message"]) for f in _failures(tmp_path / "o")] == [(4, "prompt is empty")]


def test_blank_and_whitespace_ids(tmp_path, run_cli):
    corpus = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a cat", "id": ""}, {"prompt": "a dog", "id": "   "},
                                           {"prompt": "a fox", "id": " k1 "}])
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 3, 2, 1, 0)
    ids = [r["id"] for r in _dataset(tmp_path / "o")]
    assert len(ids[0]) == 16 and ids[1] == " k1 "  # an empty id is no id; a given one is kept exactly
    assert [(f["line"], f["message"]) for f in _failures(tmp_path / "o")] == [
        (2, "id has no visible character (only U+0020 SPACE); leave it empty for a generated id")]


def test_prompts_without_a_visible_character(tmp_path, run_cli):
    corpus = tmp_path / "p.txt"
    corpus.write_text("a cat\n\u200b\n\ufeff\n\u00a0\n  \n\u2060\u200d\n", encoding="utf-8")
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 6, 1, 3, 2)
    assert [(f["line"], f["message"]) for f in _failures(tmp_path / "o")] == [
        (2, "prompt has no visible character (only U+200B ZERO WIDTH SPACE)"),
        (3, "prompt has no visible character (only U+FEFF ZERO WIDTH NO-BREAK SPACE)"),
        (6, "prompt has no visible character (only U+2060 WORD JOINER, U+200D ZERO WIDTH JOINER)")]
    assert [r["prompt"] for r in _dataset(tmp_path / "o")] == ["a cat"]


def test_seeds_of_every_type(tmp_path, run_cli):
    good = ['{"prompt": "a", "seed": 7}', '{"prompt": "b", "seed": "8"}', '{"prompt": "c", "seed": 9.0}',
            '{"prompt": "d", "seed": 9007199254740993.0}']
    bad = ['{"prompt": "e", "seed": NaN}', '{"prompt": "f", "seed": 1.5}', '{"prompt": "g", "seed": -1}',
           '{"prompt": "h", "seed": 9223372036854775808}', '{"prompt": "i", "seed": true}', '{"prompt": "j", "seed": "abc"}',
           '{"prompt": "k", "seed": [1]}']
    code, out, err = _run(run_cli, _jsonl(tmp_path / "p.jsonl", good + bad), tmp_path / "o")
    assert code == 0, err
    _accounted(out, 11, 4, 7, 0)
    assert [r["seed"] for r in _dataset(tmp_path / "o")] == [7, 8, 9, 9007199254740993]
    assert [f["message"] for f in _failures(tmp_path / "o")] == [
        "seed must be a finite integer, got nan", "seed must be an integer, got number 1.5",
        "seed -1 is outside [0, 2**63)", "seed 9223372036854775808 is outside [0, 2**63)",
        "seed must be an integer, got bool True", "seed must be an integer, got text 'abc'",
        "seed must be an integer, got list [1]"]


def test_negative_prompts_that_are_not_text(tmp_path, run_cli):
    corpus = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "negative_prompt": 5}, {"prompt": "b", "negative_prompt": ["x"]},
                                           {"prompt": "c", "negative_prompt": "blurry"}])
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 3, 1, 2, 0)
    assert [(r["prompt"], r["negative_prompt"]) for r in _dataset(tmp_path / "o")] == [("c", "blurry")]
    assert [f["message"] for f in _failures(tmp_path / "o")] == [
        "negative prompt must be a string, got number 5", "negative prompt must be a string, got list ['x']"]


def test_a_line_longer_than_the_limit_is_one_failure(tmp_path, run_cli):
    corpus = tmp_path / "p.txt"
    corpus.write_bytes(b"a cat\r\n" + b"x" * 200_000 + b"\r\na dog\r\n")
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 3, 2, 1, 0)
    assert [(f["line"], f["message"], f["raw"]) for f in _failures(tmp_path / "o")] == [
        (2, "the line is longer than 65536 bytes", "")]


def test_windows_unicode_text(tmp_path, run_cli):
    corpus = tmp_path / "p.txt"
    corpus.write_bytes("a cat\r\nun café\r\n".encode("utf-16"))
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    _accounted(out, 2, 2, 0, 0)
    assert [r["prompt"] for r in _dataset(tmp_path / "o")] == ["a cat", "un café"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_path_that_is_not_a_file_is_refused_in_one_line(tmp_path, run_cli, kind):
    corpus = tmp_path / "fifo.txt" if kind == "fifo" else Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(corpus)
    code, _, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"error: --prompts {corpus}: is {'a named pipe (FIFO)' if kind == 'fifo' else 'a character device'}, " \
                  "not a corpus file or folder; save the prompts to a file\n"
    assert not (tmp_path / "o").exists()


def test_more_rows_than_the_maximum_is_refused_unless_limited(tmp_path, run_cli, monkeypatch):
    import transforms.corpus.records as corpus_module

    monkeypatch.setattr(corpus_module, "MAX_ROWS", 2)
    corpus = tmp_path / "p.txt"
    corpus.write_text("a cat\na dog\na fox\n", encoding="utf-8")
    code, _, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 2 and err == f"error: --prompts {corpus}: more than 2 rows; split the corpus into parts, or read part of it with --limit\n"
    assert not (tmp_path / "o").exists()
    code, out, err = _run(run_cli, corpus, tmp_path / "o", "--limit", "1")
    assert code == 0, err
    assert "1 input rows (reading stopped at --limit) = 1 prompts generated + 0 prompts failed + 0 blank rows skipped" in out


def test_images_per_prompt_are_counted_apart_from_prompts(tmp_path, run_cli):
    corpus = tmp_path / "p.txt"
    corpus.write_text("a cat\n\na dog\n", encoding="utf-8")
    code, out, err = _run(run_cli, corpus, tmp_path / "o", "--images-per-prompt", "2")
    assert code == 0, err
    _accounted(out, 3, 2, 0, 1)
    assert "4 rows written (2 images per prompt), 0 shards skipped" in out
    assert len(_dataset(tmp_path / "o")) == 4


def test_failure_records_carry_the_row_id(tmp_path, run_cli):
    corpus = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a cat", "id": "c1"}, {"prompt": 42, "id": "c2"}])
    code, _, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    assert [(f["line"], f["id"], f["source"]) for f in _failures(tmp_path / "o")] == [(2, "c2", str(corpus))]

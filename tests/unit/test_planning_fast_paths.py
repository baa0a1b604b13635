"""The fast paths of planning give exactly what the general rules give: the plain-prompt check
agrees with ``check_row``, the hand-spelled manifest and digest lines with ``json.dumps``, the seed
hash with hashing the whole text, and the id buckets keep each key's records in order."""

from __future__ import annotations

import hashlib
import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.output import digest_text, manifest_line
from transforms.attribution.generate import SEED_MODULUS
from transforms.corpus import ColumnNames, PromptRecord, content_id, derive_seed
from transforms.corpus.spill import Buckets
from transforms.corpus.validation import PromptFields, RowError, check_row, plain_prompt

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # surrogates, controls, NUL included
TEXT = st.text(ANY_CHAR, max_size=12) | st.text(st.sampled_from(' \t\x00\x01\x7fa"\\\u200b\ud800é'), max_size=8)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_a_plain_prompt_is_what_check_row_keeps_as_written(text: str) -> None:
    try:
        fields = check_row({"prompt": text}, ColumnNames())
    except RowError:
        fields = None
    if plain_prompt(text):
        assert fields == PromptFields(text, None, None, "")


def test_common_prompts_take_the_plain_path_and_others_do_not() -> None:
    assert all(map(plain_prompt, ["a red fox", "  two owls\t", "x", "a\x01b", "\x7fa"]))
    assert not any(map(plain_prompt, ["", "   ", "\t\x01", "a\x00b", "café", "\u200b"]))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**12), TEXT, TEXT, st.integers(0, SEED_MODULUS - 1), TEXT)
def test_manifest_and_digest_lines_are_json_dumps(index: int, prompt_id: str, prompt: str, seed: int, negative: str) -> None:
    p = PromptRecord(index, prompt_id, prompt, seed, negative)
    assert manifest_line(p) == json.dumps(p._asdict(), ensure_ascii=False)
    assert digest_text(p) == json.dumps([p.id, p.prompt, p.seed, p.negative_prompt])
    assert json.loads(manifest_line(p)) == p._asdict()


@given(st.integers(0, 2**64), st.text(st.characters(codec="utf-8"), max_size=20))
def test_seed_and_content_id_hash_the_whole_text(run_seed: int, prompt_id: str) -> None:
    whole = hashlib.blake2b(f"{run_seed}\x00{prompt_id}".encode(), digest_size=8).digest()
    assert derive_seed(run_seed, prompt_id) == int.from_bytes(whole, "big") % SEED_MODULUS
    assert derive_seed(run_seed, prompt_id) == derive_seed(run_seed, prompt_id)  # the cached prefix is not consumed
    assert content_id(prompt_id, None) == hashlib.blake2b(f"{prompt_id}\x00".encode(), digest_size=8).hexdigest()


def test_buckets_keep_each_keys_records_in_order_across_writes(tmp_path) -> None:
    buckets = Buckets(tmp_path, "ids", count=4, held=5)
    keys = [f"k{i % 7}" for i in range(103)]
    for order, key in enumerate(keys):
        buckets.add(key, (order, key))
    seen = [record for bucket in buckets for record in bucket]
    assert sorted(seen) == list(enumerate(keys))
    for bucket in buckets:
        records = list(bucket)
        assert records == sorted(records) and len({zlib.crc32(k.encode()) % 4 for _, k in records}) == 1

"""Adversarial inputs: each ends in a clear message or a failure record, never a library traceback
and never a half-written dataset that loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_dataset

from pipeline.validate import validate_output
from tests.conftest import FAST_ARGS

RUN = [*FAST_ARGS, "--max-failure-rate", "1"]


def _run(run_cli, corpus: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("run", "--prompts", corpus, "--output", out, *RUN, *extra)


def _one_line_error(code: int, err: str) -> None:
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def _read_failures(out: Path) -> list[dict]:
    path = out / "_failures" / "read.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n\t\n"], ids=["empty file", "only blank lines"])
def test_corpus_without_prompts_is_refused_before_writing(tmp_path, run_cli, content):
    corpus = tmp_path / "p.txt"
    corpus.write_bytes(content)
    code, _, err = _run(run_cli, corpus, tmp_path / "o")
    _one_line_error(code, err)
    assert not (tmp_path / "o" / "data").exists()


def test_hard_prompts_generate_rows(tmp_path, run_cli):
    prompts = [
        "x" * 10_000,
        "!!! ??? ... ,,, ;;;",
        "🐱🐶 un chat et un chien — ünïcödé",
        "كلب يلعب بالكرة",
        "a cat\r",
    ]
    corpus = tmp_path / "p.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": p}) + "\r\n" for p in prompts), encoding="utf-8")
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    assert f"{len(prompts)} rows written" in out
    ds = load_dataset(str(tmp_path / "o"), split="train")
    by_prompt = {row["prompt"]: row for row in ds}
    assert by_prompt["x" * 10_000]["truncated"] and len(by_prompt["x" * 10_000]["tokens"]) == 75
    assert not by_prompt["كلب يلعب بالكرة"]["truncated"]
    assert "🐱" in "".join(by_prompt[prompts[2]]["tokens"])
    assert validate_output(str(tmp_path / "o")) == []


def test_bad_rows_become_read_failures(tmp_path, run_cli):
    corpus = tmp_path / "p.jsonl"
    corpus.write_bytes(
        b'{"prompt": "a cat"}\n'
        b'{"prompt": 42}\n'
        b'{"text": "no prompt column"}\n'
        b'{"prompt": "nul \\u0000 byte"}\n'
        b'{"prompt": "bad seed", "seed": -5}\n'
        b'{"prompt": "huge seed", "seed": 36893488147419103232}\n'
        b'{"prompt": "caf\xe9 latin-1"}\n'
        b'{"prompt": "a dog"\n'
    )
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    assert "1 rows written" in out and "7 prompts failed" in out
    reasons = {r["line"]: r["message"] for r in _read_failures(tmp_path / "o")}
    assert "prompt must be a string" in reasons[2]
    assert "missing column 'prompt'" in reasons[3]
    assert "NUL" in reasons[4]
    assert "outside [0, 2**63)" in reasons[5] and "outside [0, 2**63)" in reasons[6]
    assert "invalid UTF-8" in reasons[7]
    assert "invalid JSON" in reasons[8]
    assert load_dataset(str(tmp_path / "o"), split="train")["prompt"] == ["a cat"]


def test_nul_and_invalid_utf8_in_txt(tmp_path, run_cli):
    corpus = tmp_path / "p.txt"
    corpus.write_bytes(b"a cat\r\nbad \x00 nul\r\n\xff\xfe broken\r\na dog\r\n")
    code, out, err = _run(run_cli, corpus, tmp_path / "o")
    assert code == 0, err
    assert "2 rows written" in out
    assert sorted(r["line"] for r in _read_failures(tmp_path / "o")) == [2, 3]


def test_duplicate_ids_refused_before_any_work(tmp_path, run_cli):
    corpus = tmp_path / "p.jsonl"
    corpus.write_text('{"prompt": "a", "id": "k"}\n{"prompt": "b", "id": "k"}\n')
    code, _, err = _run(run_cli, corpus, tmp_path / "o")
    _one_line_error(code, err)
    assert "duplicate id 'k'" in err and not (tmp_path / "o").exists()


def test_corrupt_parquet_and_missing_column(tmp_path, run_cli):
    broken = tmp_path / "p.parquet"
    broken.write_bytes(b"PAR1garbagePAR1")
    code, _, err = _run(run_cli, broken, tmp_path / "o")
    _one_line_error(code, err)
    assert "not a readable Parquet file" in err
    csv = tmp_path / "p.csv"
    csv.write_text("caption\na cat\n")
    code, _, err = _run(run_cli, csv, tmp_path / "o2")
    _one_line_error(code, err)
    assert "no usable prompts" in err and "missing column 'prompt'" in err


def test_output_that_is_a_file_or_not_writable(tmp_path, run_cli, write_corpus):
    corpus = write_corpus(["a cat"])
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = _run(run_cli, corpus, target)
    _one_line_error(code, err)
    assert "is a file" in err
    # /proc refuses new entries even to root, so this holds for every user
    code, _, err = _run(run_cli, corpus, "/proc/daam-datasets-test-output")
    _one_line_error(code, err)
    assert "not writable" in err


def test_disk_full_leaves_no_loadable_half_dataset(tmp_path, run_cli, write_corpus, monkeypatch):
    corpus = write_corpus(["a cat", "a dog", "a fox", "a cow"])
    out = tmp_path / "o"
    monkeypatch.setenv("DAAM_DATASETS_FAULTS", "disk_full=1")
    code, _, err = _run(run_cli, corpus, out, "--shard-size", "2")
    _one_line_error(code, err)
    assert not list((out / "data").glob("*.part")) and not list(out.glob("data/.*"))
    committed = list((out / "_stats").glob("*.json"))
    assert len(committed) <= 1
    monkeypatch.delenv("DAAM_DATASETS_FAULTS")
    code, out_text, err = _run(run_cli, corpus, out, "--shard-size", "2")
    assert code == 0, err
    assert sorted(load_dataset(str(out), split="train")["prompt"]) == ["a cat", "a cow", "a dog", "a fox"]
    assert validate_output(str(out)) == []

"""Bad input: clear one-line errors, failure records, blank rows counted."""

from __future__ import annotations

import json
import logging

from tests.conftest import FAST_ARGS


def test_blank_lines_skipped_and_counted(write_corpus, run_cli, tmp_path, caplog):
    corpus = write_corpus(["a cat", "", "   ", "a dog"])
    with caplog.at_level(logging.INFO):
        code, out, _ = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS)
    assert code == 0
    assert "2 rows written" in out and "2 blank rows skipped" in out
    assert any("skipped 2 blank prompt rows" in r.getMessage() for r in caplog.records)


def test_malformed_jsonl_line_names_file_and_line(tmp_path, run_cli, caplog):
    corpus = tmp_path / "p.jsonl"
    corpus.write_text('{"prompt": "a cat"}\n{"prompt": "a dog"\n{"prompt": 7}\n', encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        code, out, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS,
                                 "--max-failure-rate", "1")
    assert code == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"{corpus}: line 2: invalid JSON" in m for m in messages)
    assert any(f"{corpus}: line 3: prompt must be a string" in m for m in messages)
    records = [json.loads(l) for l in (tmp_path / "o" / "_failures" / "read.jsonl").read_text().splitlines()]
    assert [(r["line"], r["stage"]) for r in records] == [(2, "read"), (3, "read")]


def test_failure_rate_above_limit_exits_non_zero(tmp_path, run_cli):
    corpus = tmp_path / "p.jsonl"
    corpus.write_text('{"prompt": "a cat"}\n{"text": "no prompt"}\n', encoding="utf-8")
    code, _, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS)
    assert code == 1
    assert "1 of 2 prompts failed" in err and err.count("\n") == 1


def test_unknown_model_path_is_one_line(write_corpus, run_cli, tmp_path):
    code, _, err = run_cli("run", "--prompts", write_corpus(["a cat"]), "--output", tmp_path / "o",
                           "--model", str(tmp_path / "no-model"))
    assert code == 2
    assert err == f"error: --model {tmp_path / 'no-model'}: no such model folder; pass a diffusers folder, a hub id (org/name), one of the built-ins (tiny, tiny-sdxl, tiny-sd3, tiny-flux, tiny-pixart, tiny-chroma, tiny-sana, tiny-zimage, tiny-qwenimage, tiny-flux2-klein, tiny-flux2) or a shipped world (colour-world, colour-world-sa, colour-world-dit)\n"


def test_bad_arguments_are_one_line(write_corpus, run_cli, tmp_path):
    corpus = write_corpus(["a cat"])
    for args, expected in [
        (["--steps", "0"], "--steps: expected an integer in [1, 1000]"),
        (["--format", "zip"], "--format: choose from parquet, webdataset"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--height", "60"], "--height: expected a multiple of 8 in [8, 65536]"),
        (["--shard-size", "2", "--num-shards", "3"], "not both"),
    ]:
        code, _, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *args)
        assert code == 2, args
        assert expected in err and err.count("\n") == 1, (args, err)
    code, _, err = run_cli("run", "--output", tmp_path / "o")
    assert code == 2 and "--prompts is required" in err

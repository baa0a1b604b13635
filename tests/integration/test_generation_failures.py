"""Per-prompt failure isolation, failure records, Beam metrics and one model per process."""

from __future__ import annotations

import json

import pytest
from apache_beam.utils.shared import Shared

from pipeline.options import RunSettings
from pipeline.driver import run
from tests.conftest import FAST_ARGS
from transforms.attribution import GenerationConfig, generate_traced
from transforms.shards.results import PromptFailure
from transforms.shards.generator import to_record
from transforms.corpus import PromptRecord, read_corpus
from transforms.shards.dofn import GenerateShardFn


def test_bad_prompt_costs_no_neighbour(write_corpus, tmp_path, run_cli, monkeypatch):
    prompts = ["a cat", "a dog", "a fox", "a cow", "an owl"]
    corpus = write_corpus(prompts)
    bad = read_corpus(str(corpus)).prompts[2]
    monkeypatch.setenv("DAAM_DATASETS_FAULTS", f"fail_prompts={bad.id}")
    code, out, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS,
                             "--batch-size", "4", "--max-failure-rate", "0.5")
    assert code == 0, err
    assert "4 rows written" in out and "1 prompts failed" in out
    [record] = [json.loads(l) for l in (tmp_path / "o" / "_failures" / "train-00000-of-00001.jsonl").read_text().splitlines()]
    assert record["id"] == bad.id and record["prompt"] == "a fox"
    assert record["stage"] == "generation" and "injected fault" in record["message"]
    stats = json.loads((tmp_path / "o" / "_stats" / "train-00000-of-00001.json").read_text())
    assert stats["rows"] == 4 and stats["failed_ids"] == [bad.id]


def test_failure_rate_limit_counts_generation_failures(write_corpus, tmp_path, run_cli, monkeypatch):
    corpus = write_corpus(["a cat", "a dog"])
    bad = read_corpus(str(corpus)).prompts[0]
    monkeypatch.setenv("DAAM_DATASETS_FAULTS", f"fail_prompts={bad.id}")
    code, _, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS)
    assert code == 1 and "1 of 2 prompts failed" in err


def test_non_finite_maps_are_rejected(tiny_pipe):
    [sample] = generate_traced(tiny_pipe, ["a cat"], [0], GenerationConfig(steps=1, height=64, width=64))
    prompt = PromptRecord(0, "x", "a cat", 0)
    assert to_record(prompt, sample, "float16").token_maps.shape == (2, 8, 8)
    sample.heat_map.maps[1, 0, 0] = float("nan")
    with pytest.raises(PromptFailure, match="token maps contain NaN or infinite values") as info:
        to_record(prompt, sample, "float16")
    assert info.value.stage == "attribution"


def test_beam_metrics_are_reported(write_corpus, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    corpus = write_corpus(["a cat", "a dog", "a fox"])
    settings = RunSettings(prompts=str(corpus), output=str(tmp_path / "o"), shard_size=2,
                           generation=GenerationConfig(steps=1, height=64, width=64))
    summary = run(settings, PipelineOptions(["--runner=FnApiRunner"]))
    assert summary.metrics["prompts"] == 3 and summary.metrics["images"] == 3
    assert summary.metrics["shards_committed"] == 2 and summary.metrics.get("failures", 0) == 0


def test_one_model_per_process_across_dofn_instances(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return type("Generator", (), {"hooks": None})()

    shared = Shared()
    fns = [GenerateShardFn(str(tmp_path), ("parquet",), dict, "fp", make, shared) for _ in range(3)]
    for fn in fns:
        fn.setup()
    assert len(calls) == 1
    assert fns[0]._generator is fns[1]._generator is fns[2]._generator

"""``daam-datasets run --model tiny-flux`` end to end: patch-grid token maps on T5 tokens, the
Flux default guidance, a negative prompt as a failure record, ``--negative-prompt`` refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

ROWS = [
    {"prompt": "a hotdog on a Plate", "seed": 1},
    {"prompt": "two cats and a dog", "seed": 2},
    {"prompt": "a red bicycle", "seed": 3, "negative_prompt": "blurry"},
]


@pytest.fixture(scope="module")
def output(tmp_path_factory, one_torch_thread):
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("flux-run")
    corpus = root / "prompts.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    args = ["run", "--prompts", str(corpus), "--output", str(root / "out"), "--model", "tiny-flux",
            "--steps", "2", "--height", "64", "--width", "96", "--batch-size", "3", "--max-failure-rate", "0.5"]
    assert main(args) == 0
    return root / "out"


def test_rows_have_patch_grid_maps_on_t5_tokens(output):
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == {ROWS[0]["prompt"], ROWS[1]["prompt"]}
    row = rows[ROWS[0]["prompt"]]
    assert row["image"].size == (96, 64)
    assert row["tokens"] == ["a", "hot", "dog", "on", "a", "P", "late"]
    assert [(w["word"], w["start"], w["end"]) for w in row["words"]][1] == ("hotdog", 1, 3)
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (7, 16, 24) and np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    run = json.loads((output / "run.json").read_text())
    assert run["map_size"] == [16, 24] and run["image_size"] == [64, 96]
    assert run["settings"]["generation"]["guidance_scale"] == 3.5  # Flux's own default


def test_negative_prompt_row_is_a_failure_record(output):
    [line] = (output / "_failures").glob("train-*.jsonl")
    [failure] = [json.loads(x) for x in line.read_text().splitlines()]
    assert failure["prompt"] == ROWS[2]["prompt"] and "Flux takes no negative prompt" in failure["message"]


@pytest.mark.parametrize("model, args, message", [
    ("tiny-flux", ["--negative-prompt", "blurry"], "--negative-prompt: Flux is guidance-distilled"),
    ("tiny-flux", ["--scheduler", "ddim"], "--scheduler ddim: flux samples with flow matching"),
    ("tiny-sd3", ["--scheduler", "euler"], "--scheduler euler: stable-diffusion-3 samples with flow matching"),
])
def test_flags_the_family_cannot_honour_are_refused_in_one_line(run_cli, write_corpus, tmp_path, model, args, message):
    corpus = write_corpus(["a cat"])
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--model", model, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()

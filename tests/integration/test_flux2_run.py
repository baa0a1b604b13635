"""``daam-datasets run --model tiny-flux2-klein`` / ``tiny-flux2`` → ``load_dataset``: only the user prompt's
tokens of the chat-templated text (Qwen3's; Mistral's after dev's system message), maps on the packed
patch grid, klein's own guidance (two calls per step, the conditional one mapped)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

PROMPTS = ["A Hotdog, on a plate!", "an armadillo eating watermelon"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_to_load_dataset(built_output):
    output = built_output(PROMPTS, "--model", "tiny-flux2-klein", "--steps", "2", "--height", "32", "--width", "64")
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS)
    row = rows[PROMPTS[0]]
    assert row["image"].size == (64, 32)
    assert row["tokens"] == ["A", "Hot", "dog", ",", "on", "a", "plate", "!"]  # the prompt's only, case kept
    assert [w["word"] for w in row["words"]] == ["A", "Hotdog", ",", "on", "a", "plate", "!"]
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (8, 16, 32) and np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    info = json.loads((output / "run.json").read_text())
    assert info["map_size"] == [16, 32] and info["settings"]["generation"]["guidance_scale"] == 4.0


def test_dev_run_maps_the_prompt_not_the_system_message(built_output):
    output = built_output(PROMPTS[:1], "--model", "tiny-flux2", "--steps", "1", "--height", "32", "--width", "32")
    [row] = load_dataset(str(output), split="train")
    assert row["tokens"] == ["A", "Hot", "dog", ",", "on", "a", "plate", "!"]
    assert np.asarray(row["token_maps"]).shape == (8, 16, 16)
    assert json.loads((output / "run.json").read_text())["settings"]["generation"]["guidance_scale"] == 4.0


@pytest.mark.parametrize("model", ["tiny-flux2-klein", "tiny-flux2"])
def test_negative_prompt_refused_in_one_line(tmp_path, run_cli, write_corpus, model):
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", model, "--steps", "2", "--negative-prompt", "blurry")
    assert code == 2 and "Flux.2 takes no negative prompt" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()

"""``daam-datasets run --model tiny-qwenimage`` → ``load_dataset``: the user prompt's tokens only (not
the chat template's), maps on the packed patch grid, true CFG (two calls per step) with a negative
prompt, the family's guidance default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from datasets import load_dataset

PROMPTS = ["a hotdog, on a plate!", "an armadillo eating watermelon"]
TOKENS = ["a", "hot", "dog", ",", "on", "a", "plate", "!"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_to_load_dataset(built_output):
    output = built_output(PROMPTS, "--model", "tiny-qwenimage", "--steps", "2", "--height", "64", "--width", "128",
                          "--negative-prompt", "blurry")
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS)
    row = rows[PROMPTS[0]]
    assert row["image"].size == (128, 64)
    assert row["tokens"] == TOKENS  # the prompt's own tokens: no system message, no <|im_start|>user
    assert [w["word"] for w in row["words"]] == ["a", "hotdog", ",", "on", "a", "plate", "!"]
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (len(TOKENS), 8, 16) and np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    info = json.loads((output / "run.json").read_text())
    assert info["map_size"] == [8, 16] and info["settings"]["generation"]["guidance_scale"] == 4.0


def test_concept_maps_refused_in_one_line(tmp_path, run_cli, write_corpus):
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", "tiny-qwenimage", "--steps", "2", "--concept-maps")
    assert code == 2 and "Qwen-Image" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_size_the_pipeline_would_change_refused_in_one_line(tmp_path, run_cli, write_corpus):
    """The pipeline silently rounds sizes off multiples of VAE factor x packing: with Qwen-Image's
    factor-8 VAE (three downsamplings, as read from the folder's config) that is 16 pixels."""
    from transforms.models.loading import ModelSpec, model_geometry, resolve_model_source

    folder = tmp_path / "qwen-factor-8"
    shutil.copytree(resolve_model_source("tiny-qwenimage"), folder)
    config = json.loads((folder / "vae" / "config.json").read_text())
    config.update(temperal_downsample=[False, True, True], dim_mult=[1, 2, 4, 4])
    (folder / "vae" / "config.json").write_text(json.dumps(config))
    assert model_geometry(ModelSpec(str(folder)), str(folder)) == (1024, 1024, 16)
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", folder, "--steps", "2", "--height", "72", "--width", "64")
    last = err.rstrip("\n").split("\n")[-1]  # (building the tiny folder above may print progress first)
    assert code == 2 and last.startswith("error: ") and "multiples of 16" in last, err
    assert not (tmp_path / "out").exists()

"""``daam-datasets run --model tiny-sd3`` (and an SD3.5-style folder) → ``load_dataset``: rows with T5
tokens, sentencepiece words and maps on the patch grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

from transforms.models.family import STABLE_DIFFUSION_3, default_guidance, family_of
from transforms.models.loading import ModelSpec, model_geometry, resolve_model_source
from transforms.models.tiny_sd3 import build_tiny_sd3_pipeline

PROMPTS = ["A Hotdog, on a plate!", "an armadillo eating watermelon"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def output(built_output):
    return built_output(PROMPTS, "--model", "tiny-sd3", "--steps", "2")


def test_geometry_of_the_builtin():
    source = resolve_model_source("tiny-sd3")
    assert family_of(source).name == STABLE_DIFFUSION_3 and default_guidance("tiny-sd3") == 7.0
    assert model_geometry(ModelSpec("tiny-sd3"), source) == (256, 256, 16)  # VAE factor 8 x patch 2


def test_rows_have_t5_tokens_and_patch_grid_maps(output):
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS)
    row = rows[PROMPTS[0]]
    assert row["image"].size == (256, 256)
    assert row["tokens"] == ["A", "Hot", "dog", ",", "on", "a", "plate", "!"]
    assert [(w["word"], w["start"], w["end"]) for w in row["words"]][:3] == [("A", 0, 1), ("Hotdog", 1, 3), (",", 3, 4)]
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (8, 16, 16) and np.isfinite(maps).all() and (maps >= 0).all()
    assert maps.max() > 0
    info = json.loads((output / "run.json").read_text())
    assert info["map_size"] == [16, 16] and info["image_size"] == [256, 256]
    assert info["settings"]["generation"]["guidance_scale"] == 7.0


def test_sd35_style_folder_runs_at_a_nonsquare_size(tmp_path, run_cli, write_corpus):
    folder = tmp_path / "sd35"
    build_tiny_sd3_pipeline(num_layers=2, heads=2, qk_norm="rms_norm", dual_attention_layers=(0, 1)).save_pretrained(folder)
    out = tmp_path / "out"
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[1:]), "--output", out, "--model", folder,
                           "--steps", "2", "--height", "64", "--width", "96")
    assert code == 0, err
    [row] = load_dataset(str(out), split="train")
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (len(row["tokens"]), 4, 6) and np.isfinite(maps).all()


def test_size_off_the_patch_grid_is_one_line(tmp_path, run_cli, write_corpus):
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", "tiny-sd3", "--height", "72", "--steps", "2")
    assert code == 2 and "multiples of 16" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()

"""``daam-datasets run --model tiny-sana`` → ``load_dataset``: rows with the Gemma tokens of the
prompt the pipeline encodes (behind its complex human instruction), maps on the 32-pixel patch
grid, Sana's own guidance; its refusals as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

PROMPTS = ["A Hotdog, on a plate!", "an armadillo eating watermelon"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def output(built_output):
    return built_output(PROMPTS, "--model", "tiny-sana", "--steps", "2")


def test_rows_have_gemma_tokens_and_patch_grid_maps(output):
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS)  # the prompt as given; the words as the pipeline encodes it
    row = rows[PROMPTS[0]]
    assert row["image"].size == (512, 512)
    assert row["tokens"] == ["a", "hot", "dog", ",", "on", "a", "plate", "!"]
    assert [(w["word"], w["start"], w["end"]) for w in row["words"]][:3] == [("a", 0, 1), ("hotdog", 1, 3), (",", 3, 4)]
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (8, 16, 16) and np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    info = json.loads((output / "run.json").read_text())
    assert info["map_size"] == [16, 16] and info["image_size"] == [512, 512]
    assert info["settings"]["generation"]["guidance_scale"] == 4.5  # SanaPipeline's own default


@pytest.mark.parametrize(
    "args,message",
    [(["--height", "512", "--width", "640"], "pass a bin size, e.g. --height 448 --width 576"),
     (["--classes", "voc", "--refine"], "add --no-refine"),
     (["--scheduler", "ddim"], "drop --scheduler")],
    ids=["off-bin-size", "refine", "scheduler"],
)
def test_refusals_are_one_line(tmp_path, run_cli, write_corpus, args, message):
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", "tiny-sana", "--steps", "2", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()

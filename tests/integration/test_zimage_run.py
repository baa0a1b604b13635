"""``daam-datasets run --model tiny-zimage`` → ``load_dataset``: the user prompt's Qwen tokens out of
the chat-templated text, maps on the patch grid, Z-Image's own guidance (CFG batched [cond; uncond],
the conditional half mapped); its refusals as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

PROMPTS = ["A Hotdog, on a plate!", "an armadillo eating watermelon"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_run_to_load_dataset(built_output):
    output = built_output(PROMPTS, "--model", "tiny-zimage", "--steps", "2", "--height", "32", "--width", "64")
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS)
    row = rows[PROMPTS[0]]
    assert row["image"].size == (64, 32)
    # only the prompt's tokens (none of the template's), case kept as Qwen encodes it; Ġ starts a word
    assert row["tokens"] == ["A", "Hot", "dog", ",", "on", "a", "plate", "!"]
    assert [w["word"] for w in row["words"]] == ["A", "Hotdog", ",", "on", "a", "plate", "!"]
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (8, 8, 16) and np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    info = json.loads((output / "run.json").read_text())
    assert info["map_size"] == [8, 16] and info["settings"]["generation"]["guidance_scale"] == 5.0
    assert info["trace"]["architecture"] == "zimage" and info["trace"]["modules"] == {"single": 2}


@pytest.mark.parametrize("args,message", [(["--classes", "voc", "--refine"], "add --no-refine"),
                                          (["--scheduler", "ddim"], "flow matching")], ids=["refine", "scheduler"])
def test_refusals_are_one_line(tmp_path, run_cli, write_corpus, args, message):
    code, _, err = run_cli("run", "--prompts", write_corpus(PROMPTS[:1]), "--output", tmp_path / "out",
                           "--model", "tiny-zimage", "--steps", "2", "--width", "32", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_classes_match_byte_level_words(built_output):
    """``--classes``: class names match the prompt's words (Ġ rule), pieces spanning a word included."""
    output = built_output(["a dog on a sofa"], "--model", "tiny-zimage", "--steps", "2", "--height", "32",
                          "--width", "32", "--classes", "voc")
    [row] = load_dataset(str(output), split="train")
    assert row["tokens"] == ["a", "dog", "on", "a", "sof", "a"]
    assert [(c["name"], c["spans"]) for c in row["classes"]] == [("dog", [{"start": 1, "end": 2}]),
                                                                 ("sofa", [{"start": 4, "end": 6}])]

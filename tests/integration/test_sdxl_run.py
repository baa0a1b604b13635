"""``daam-datasets run`` end to end on SDXL: the built-in ``tiny-sdxl`` and a saved folder of another
SDXL shape (``--model PATH``) whose second tokenizer differs, read back with ``datasets``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

from tests.unit.test_sdxl import AGREED, DISAGREED, build_other_sdxl, short_merge_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SDXL_PROMPTS = [AGREED, "a dog on a bed", "a cup of coffee next to a book"]
SMALL = ("--steps", "2", "--height", "64", "--width", "96")


def _check_rows(out, prompts, map_size) -> None:
    ds = load_dataset(str(out), split="train")
    assert sorted(ds["prompt"]) == sorted(prompts)
    for row in ds:
        maps = np.asarray(row["token_maps"])
        assert maps.shape == (len(row["tokens"]), *map_size)
        assert row["image"].size == (map_size[1] * 8, map_size[0] * 8)
        assert np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0


def test_tiny_sdxl_runs_to_a_dataset(built_output):
    out = built_output(SDXL_PROMPTS, "--model", "tiny-sdxl", *SMALL, "--batch-size", "2")
    _check_rows(out, SDXL_PROMPTS, (8, 12))
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["model"]["model"] == "tiny-sdxl"
    assert settings["generation"]["guidance_scale"] == 5.0  # SDXL's own default


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory):
    """A saved SDXL folder of another shape whose ``tokenizer_2`` has fewer BPE merges."""
    pipe = build_other_sdxl()
    pipe.tokenizer_2 = short_merge_tokenizer()
    folder = tmp_path_factory.mktemp("sdxl") / "model"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def test_saved_folder_of_another_shape_runs_and_disagreeing_prompts_fail(other_folder, write_corpus, tmp_path, run_cli):
    corpus = write_corpus([AGREED, DISAGREED, "a red car"])
    out = tmp_path / "o"
    code, stdout, err = run_cli("run", "--prompts", corpus, "--output", out, "--model", other_folder, *SMALL,
                                "--layers", "all", "--batch-size", "3", "--max-failure-rate", "0.5")
    assert code == 0, err
    assert "2 rows written" in stdout and "1 prompts failed" in stdout
    _check_rows(out, [AGREED, "a red car"], (8, 12))
    lines = (out / "_failures" / "train-00000-of-00001.jsonl").read_text().splitlines()
    [failure] = [json.loads(line) for line in lines]
    assert failure["prompt"] == DISAGREED and failure["stage"] == "generation"
    assert "split this prompt into different key positions" in failure["message"]


@pytest.mark.parametrize("args, expected", [
    (("--height", "65536", "--width", "65536"), "one generation of 1 image needs about"),
    (("--factors", "1"), "traces no cross-attention layer of this model (it has cross-attention at factors 2, 4;"),
])
def test_memory_and_geometry_checks_refuse_before_any_write(args, expected, write_corpus, tmp_path, run_cli):
    corpus = write_corpus([AGREED])
    code, stdout, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", "--model", "tiny-sdxl",
                                "--steps", "2", *args)
    assert code == 2 and stdout == "" and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()

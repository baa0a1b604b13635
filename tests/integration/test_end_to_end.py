"""``daam-datasets run`` end to end on the tiny model, read back with ``datasets`` and ``webdataset``."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest
from datasets import Array3D, Image, load_dataset

from tests.conftest import FAST_ARGS, PROMPTS


@pytest.fixture(scope="module")
def built(built_output):
    """One run of 9 prompts (+ a blank line) into 3 shards, Parquet and WebDataset."""
    return built_output(PROMPTS[:4] + [""] + PROMPTS[4:], *FAST_ARGS, "--shard-size", "3", "--batch-size", "2",
                        "--format", "parquet,webdataset", "--negative-prompt", "blurry")


def test_load_dataset_rows_and_columns(built):
    ds = load_dataset(str(built), split="train")
    assert ds.num_rows == len(PROMPTS)
    assert isinstance(ds.features["image"], Image)
    assert isinstance(ds.features["token_maps"], Array3D)
    assert sorted(ds["prompt"]) == sorted(PROMPTS)
    assert len(set(ds["id"])) == len(PROMPTS)
    for row in ds:
        maps = np.asarray(row["token_maps"])
        assert row["image"].size == (64, 64)
        assert maps.shape == (len(row["tokens"]), 8, 8)
        assert np.isfinite(maps).all() and (maps >= 0).all()
        assert row["words"][-1]["end"] == len(row["tokens"])
        assert not row["truncated"]
        assert row["negative_prompt"] == "blurry" and row["image_index"] == 0 and row["prompt_id"] == row["id"]


def test_streaming_parquet_and_webdataset(built):
    stream = load_dataset("parquet", data_files=str(built / "data" / "*.parquet"), split="train", streaming=True)
    first = next(iter(stream))
    assert first["image"].size == (64, 64)
    wds_stream = load_dataset("webdataset", data_files=str(built / "wds" / "*.tar"), split="train", streaming=True)
    sample = next(iter(wds_stream))
    assert set(sample) >= {"png", "json", "maps.npy"}
    assert np.asarray(sample["maps.npy"]).shape == (len(sample["json"]["tokens"]), 8, 8)


def test_webdataset_library_reads_every_sample(built):
    import webdataset as wds

    urls = sorted(glob.glob(str(built / "wds" / "*.tar")))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == len(PROMPTS)
    ids = {s["json"]["id"] for s in samples}
    assert ids == set(load_dataset(str(built), split="train")["id"])


def test_card_and_run_summary(built):
    card = (built / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "dataset_info:" in card and "image-segmentation" in card
    run = json.loads((built / "run.json").read_text())
    assert run["status"] == "complete" and run["summary"]["rows"] == len(PROMPTS)
    assert run["summary"]["blank"] == 1
    assert run["versions"]["diffusers"]

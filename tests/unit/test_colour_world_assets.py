"""The shipped colour-world weights: hashes match, they load offline, and reproduce the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from transforms.colour_world.assets import asset_root, file_hashes, folder_sha256, shipped_model_path

REFERENCE = Path(__file__).parents[1] / "reference"


def test_manifest_matches_the_shipped_files() -> None:
    folder = shipped_model_path()
    manifest = json.loads((asset_root() / "manifest.json").read_text())
    hashes = file_hashes(folder)
    assert manifest["sha256"] == folder_sha256(hashes)
    assert any(p.endswith(".safetensors") for p in hashes)
    assert not any(p.endswith((".bin", ".pt", ".pkl")) for p in hashes)
    assert manifest["bytes"] < 10_000_000


def test_shipped_weights_reproduce_the_reference() -> None:
    sys.path.insert(0, str(REFERENCE))
    try:
        from make_colour_world_reference import CASES, reference_samples
    finally:
        sys.path.remove(str(REFERENCE))
    stored = np.load(REFERENCE / "colour_world_reference.npz")
    meta = json.loads((REFERENCE / "colour_world_reference.json").read_text())
    assert meta["weights_sha256"] == json.loads((asset_root() / "manifest.json").read_text())["sha256"]
    samples = reference_samples()
    assert len(samples) == len(CASES)
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample.image, stored[f"case{i}/image"])
        np.testing.assert_array_equal(sample.heat_map.maps.numpy(), stored[f"case{i}/maps"])

"""The shipped worlds' weights: hashes match, they load offline, and reproduce the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from transforms.colour_world.assets import SHIPPED_WORLDS, asset_root, file_hashes, folder_sha256, shipped_model_path

REFERENCE = Path(__file__).parents[1] / "reference"
sys.path.insert(0, str(REFERENCE))
try:
    from make_colour_world_reference import CASES, machine, reference_path, reference_samples
finally:
    sys.path.remove(str(REFERENCE))

WORLDS = [w for w in SHIPPED_WORLDS if (asset_root(w) / "manifest.json").exists()]


def test_the_three_worlds_are_shipped() -> None:
    assert {"colour-world", "colour-world-sa", "colour-world-dit"} <= set(WORLDS)


@pytest.mark.parametrize("world", WORLDS)
def test_manifest_matches_the_shipped_files(world: str) -> None:
    folder = shipped_model_path(world)
    manifest = json.loads((asset_root(world) / "manifest.json").read_text())
    hashes = file_hashes(folder)
    assert manifest["model"] == world and manifest["sha256"] == folder_sha256(hashes)
    assert any(p.endswith(".safetensors") for p in hashes)
    assert not any(p.endswith((".bin", ".pt", ".pkl")) for p in hashes)
    assert manifest["bytes"] < 10_000_000


@pytest.mark.parametrize("world", WORLDS)
def test_a_changed_file_is_refused(world: str, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(asset_root(world), root)
    weights = next(p for p in sorted((root / "pipeline").rglob("*.safetensors")))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="do not match"):
        shipped_model_path(world, root)


@pytest.mark.parametrize("world", WORLDS)
def test_shipped_weights_reproduce_the_reference(world: str) -> None:
    path = reference_path(world)
    stored = np.load(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["weights_sha256"] == json.loads((asset_root(world) / "manifest.json").read_text())["sha256"]
    samples = reference_samples(world)
    assert len(samples) == len(CASES)
    exact = {k: meta.get(k) for k in machine()} == machine()
    for i, sample in enumerate(samples):
        for name, value in (("image", sample.image), ("maps", sample.heat_map.maps.numpy())):
            if exact:  # the recorded torch and CPU kernels: bit for bit
                np.testing.assert_array_equal(value, stored[f"case{i}/{name}"])
            else:  # other kernels or another CPU sum in another order, and 20 denoising steps
                # amplify that (measured up to 1e-4 between two x86 machines): far below what any
                # change of weights or code gives
                np.testing.assert_allclose(value, stored[f"case{i}/{name}"], rtol=1e-3, atol=1e-3)

"""Reference mode equals the original DAAM 0.2.0 on the tiny model.

The arrays in tests/reference/ were produced by tests/reference/make_daam_reference.py in a separate
venv with daam 0.2.0 / diffusers 0.21.2; this test needs neither.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transforms.attribution import GenerationConfig, generate_traced
from transforms.models.tiny_sd import tiny_model_path

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
META = json.loads((REFERENCE / "daam_0.2.0_tiny.json").read_text())
ARRAYS = np.load(REFERENCE / "daam_0.2.0_tiny.npz")
MAP_ATOL = 1e-5
MASK_MAX_FRACTION = 0.001


def test_fixtures_were_made_with_this_tiny_model():
    folder = tiny_model_path()
    for rel, digest in META["model"]["sha256"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, f"{rel} differs: regenerate fixtures"


@pytest.fixture(scope="module")
def generated(tiny_pipe):
    torch.set_num_threads(1)  # the reference was made single-threaded; summation order matters at 1e-6
    try:
        out = {}
        for case in META["cases"]:
            config = GenerationConfig(
                steps=case["steps"], guidance_scale=case["guidance_scale"], height=case["height"], width=case["width"]
            )
            [sample] = generate_traced(tiny_pipe, [case["prompt"]], [case["seed"]], config)
            out[case["key"]] = sample
        return out
    finally:
        torch.set_num_threads(2)


@pytest.mark.parametrize("case", META["cases"], ids=[c["prompt"] for c in META["cases"]])
def test_global_maps_equal_reference(generated, case):
    heat_map = generated[case["key"]].heat_map
    expected = torch.from_numpy(ARRAYS[f"{case['key']}/global"])
    assert heat_map.maps.shape == expected.shape
    torch.testing.assert_close(heat_map.maps, expected, rtol=0, atol=MAP_ATOL)
    expected_norm = torch.from_numpy(ARRAYS[f"{case['key']}/global_norm"])
    torch.testing.assert_close(heat_map.normalized().maps, expected_norm, rtol=0, atol=MAP_ATOL * 10)


@pytest.mark.parametrize("case", META["cases"], ids=[c["prompt"] for c in META["cases"]])
def test_word_maps_and_masks_equal_reference(generated, case):
    sample = generated[case["key"]]
    size = (case["height"], case["width"])
    for j, word in enumerate(case["words"]):
        expected = torch.from_numpy(ARRAYS[f"{case['key']}/word{j}/map"])
        torch.testing.assert_close(sample.heat_map.word_map(word), expected, rtol=0, atol=MAP_ATOL)
        packed = ARRAYS[f"{case['key']}/word{j}/mask"]
        expected_mask = np.unpackbits(packed, axis=-1, count=case["width"]).astype(bool)
        mask = sample.heat_map.word_mask(word, size).numpy()
        assert expected_mask.any() and not expected_mask.all()
        assert (mask != expected_mask).mean() <= MASK_MAX_FRACTION, word


@pytest.mark.parametrize("case", META["cases"], ids=[c["prompt"] for c in META["cases"]])
def test_images_equal_reference(generated, case):
    crop = ARRAYS[f"{case['key']}/image_crop"]
    image = np.asarray(generated[case["key"]].pil_image())[: crop.shape[0], : crop.shape[1]]
    assert np.abs(image.astype(int) - crop.astype(int)).max() <= 1


def test_word_absent_as_token_sequence_raises_like_reference(generated):
    hotdog = next(c for c in META["cases"] if "hotdog" in c["prompt"])
    with pytest.raises(ValueError, match="not a token sequence"):
        generated[hotdog["key"]].heat_map.word_map("dog")

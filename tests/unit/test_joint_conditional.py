"""Joint attention under CFG: the image -> text slice is computed for the conditional images only."""

from __future__ import annotations

import pytest
import torch

from transforms.attribution.config import TraceConfig
from transforms.attribution.joint import record_text_maps, text_key_maps
from transforms.attribution.store import HeatMapStore

IMAGES, HEADS, SIDE, TEXT, DIM = 2, 3, 4, 5, 8


def _qk(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, HEADS, SIDE * SIDE + TEXT, DIM)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def _store(cfg: bool, heads: str = "mean") -> HeatMapStore:
    store = HeatMapStore(TraceConfig(heads=heads))
    store.begin(IMAGES, cfg=cfg, latent_size=(SIDE, SIDE))
    return store


@pytest.mark.parametrize("heads", ["mean", "max"])
def test_cfg_maps_equal_the_whole_batch_slice_and_ignore_the_unconditional_half(heads):
    query, key = _qk(2 * IMAGES)
    image, text = slice(0, SIDE * SIDE), slice(SIDE * SIDE, None)
    expected = text_key_maps(query, key, image, text, DIM**-0.5, heads=heads)[IMAGES:]
    query[:IMAGES] = float("nan")  # never read: a NaN there would reach every map otherwise
    store = _store(cfg=True, heads=heads)
    record_text_maps(store, "layer", query, key, image, text)
    torch.testing.assert_close(store.sums["layer"][:, 0], expected, rtol=0, atol=0)
    assert store.counts["layer"] == (HEADS if heads == "mean" else 1)


def test_without_cfg_every_image_is_mapped():
    query, key = _qk(IMAGES)
    image, text = slice(0, SIDE * SIDE), slice(SIDE * SIDE, None)
    store = _store(cfg=False)
    record_text_maps(store, "layer", query, key, image, text)
    torch.testing.assert_close(store.sums["layer"][:, 0], text_key_maps(query, key, image, text, DIM**-0.5))


def test_conditional_rows_and_wrong_sizes():
    store = _store(cfg=True)
    assert store.conditional_rows("layer", 2 * IMAGES) == slice(IMAGES, 2 * IMAGES)
    with pytest.raises(RuntimeError, match="CFG batch of 4"):
        store.conditional_rows("layer", IMAGES)
    with pytest.raises(RuntimeError, match="expected 2 conditional images, got 4"):
        store.add_reduced("layer", torch.zeros(2 * IMAGES, SIDE * SIDE, TEXT), HEADS, conditional_only=True)

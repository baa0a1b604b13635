"""Checks of one row's content, whatever the format it was read from: token maps (dtype, shape, one
map row per token, finite and non-negative), word spans and the image (decodes, recorded size)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .context import Validation


def check_row(v: Validation, shard: str, rel: str, row: int, tokens: list, maps: np.ndarray | None,
              png: bytes | None, words: list | None = None, maps_error: str = "") -> None:
    """Report what is wrong with row ``row`` of the file ``rel``; ``maps_error`` says why maps did not decode."""
    where = f"row {row}"
    if maps_error:
        v.add(shard, "map_shape", f"{where}: {maps_error}", rel)
    elif maps is not None:
        _check_maps(v, shard, rel, where, tokens, maps)
    if words:
        _check_words(v, shard, rel, where, tokens, words)
    _check_image(v, shard, rel, where, png)


def _check_maps(v: Validation, shard: str, rel: str, where: str, tokens: list, maps: np.ndarray) -> None:
    h, w = v.map_size  # type: ignore[misc]
    if maps.dtype != np.dtype(v.map_dtype):
        v.add(shard, "map_dtype", f"{where}: maps are {maps.dtype}, features say {v.map_dtype}", rel)
    if maps.ndim != 3 or maps.shape[1:] != (h, w):
        v.add(shard, "map_shape", f"{where}: maps of shape {maps.shape}, expected (n, {h}, {w})", rel)
    elif maps.shape[0] != len(tokens):
        v.add(shard, "tokens", f"{where}: {maps.shape[0]} map rows for {len(tokens)} tokens", rel)
    values = maps.astype(np.float32)
    if not np.isfinite(values).all():
        v.add(shard, "map_values", f"{where}: maps contain NaN or infinite values", rel)
    elif (values < 0).any():
        v.add(shard, "map_values", f"{where}: maps contain negative values", rel)


def _check_words(v: Validation, shard: str, rel: str, where: str, tokens: list, words: list[dict[str, Any]]) -> None:
    for word in words:
        if not 0 <= word["start"] < word["end"] <= len(tokens):
            v.add(shard, "tokens", f"{where}: word {word['word']!r} spans [{word['start']}, {word['end']}) "
                  f"outside {len(tokens)} tokens", rel)
            return


def _check_image(v: Validation, shard: str, rel: str, where: str, png: bytes | None) -> None:
    from PIL import Image as PILImage

    if png is None:
        v.add(shard, "image", f"{where}: no image bytes", rel)
        return
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            image.load()
            size = image.size
    except Exception as error:  # PIL raises many types for damaged images
        v.add(shard, "image", f"{where}: image does not decode ({type(error).__name__}: {error})", rel)
        return
    if v.image_size and size != (v.image_size[1], v.image_size[0]):
        v.add(shard, "image", f"{where}: image is {size[0]}x{size[1]}, run.json says "
              f"{v.image_size[1]}x{v.image_size[0]}", rel)

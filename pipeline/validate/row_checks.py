"""Checks of one row's content, whatever the format it was read from: token maps (dtype, shape, one
map row per token, finite and non-negative), word spans and the image (decodes, recorded size)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .context import Validation

IGNORE = 255  # the label value of ignored pixels


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
    _check_dtype_and_values(v, shard, rel, where, maps)
    if maps.ndim != 3 or maps.shape[1:] != (h, w):
        v.add(shard, "map_shape", f"{where}: maps of shape {maps.shape}, expected (n, {h}, {w})", rel)
    elif maps.shape[0] != len(tokens):
        v.add(shard, "tokens", f"{where}: {maps.shape[0]} map rows for {len(tokens)} tokens", rel)


def _check_dtype_and_values(v: Validation, shard: str, rel: str, where: str, maps: np.ndarray, what: str = "maps") -> None:
    if maps.dtype != np.dtype(v.map_dtype):
        v.add(shard, "map_dtype", f"{where}: {what} are {maps.dtype}, features say {v.map_dtype}", rel)
    values = maps.astype(np.float32)
    if not np.isfinite(values).all():
        v.add(shard, "map_values", f"{where}: {what} contain NaN or infinite values", rel)
    elif (values < 0).any():
        v.add(shard, "map_values", f"{where}: {what} contain negative values", rel)


def check_timestep_maps(v: Validation, shard: str, rel: str, row: int, tokens: list, maps: np.ndarray | None,
                        error: str = "") -> None:
    """A row's per-timestep maps: ``(K, len(tokens), h, w)`` in the map dtype, finite, non-negative."""
    where = f"row {row}"
    if error or maps is None:
        v.add(shard, "map_shape", f"{where}: timestep_maps {error or 'missing'}", rel)
        return
    expected = (v.timestep_bins, len(tokens), *v.map_size)  # type: ignore[misc]
    if maps.shape != expected:
        v.add(shard, "map_shape", f"{where}: timestep_maps of shape {maps.shape}, expected {expected}", rel)
    _check_dtype_and_values(v, shard, rel, where, maps, "timestep_maps")


def _check_words(v: Validation, shard: str, rel: str, where: str, tokens: list, words: list[dict[str, Any]]) -> None:
    for word in words:
        if not 0 <= word["start"] < word["end"] <= len(tokens):
            v.add(shard, "tokens", f"{where}: word {word['word']!r} spans [{word['start']}, {word['end']}) "
                  f"outside {len(tokens)} tokens", rel)
            return


def _decoded(v: Validation, shard: str, rel: str, where: str, png: bytes | None, kind: str, what: str) -> Any:
    """The decoded image of ``png``, or ``None`` with a problem of ``kind`` reported; a size other
    than run.json's is reported too."""
    from PIL import Image as PILImage

    if png is None:
        v.add(shard, kind, f"{where}: no {what} bytes", rel)
        return None
    try:
        with PILImage.open(io.BytesIO(png)) as image:
            image.load()
            decoded = image.copy()
    except Exception as error:  # PIL raises many types for damaged images
        v.add(shard, kind, f"{where}: {what} does not decode ({type(error).__name__}: {error})", rel)
        return None
    size = decoded.size
    if v.image_size and size != (v.image_size[1], v.image_size[0]):
        v.add(shard, kind, f"{where}: {what} is {size[0]}x{size[1]}, run.json says "
              f"{v.image_size[1]}x{v.image_size[0]}", rel)
    return decoded


def _check_image(v: Validation, shard: str, rel: str, where: str, png: bytes | None) -> None:
    _decoded(v, shard, rel, where, png, "image", "image")


def check_label(v: Validation, shard: str, rel: str, where: str, png: bytes | None) -> None:
    """A label map decodes as a single-channel image of the run's size with values in {0..K, 255}."""
    label = _decoded(v, shard, rel, where, png, "label", "label map")
    if label is None:
        return
    if label.mode != "L":
        v.add(shard, "label", f"{where}: label map is mode {label.mode}, expected single-channel L", rel)
        return
    bad = sorted({int(x) for x in np.unique(np.asarray(label))} - {*range(v.num_classes + 1), IGNORE})
    if bad:
        v.add(shard, "label", f"{where}: label values {bad[:5]} are not classes 0..{v.num_classes} or {IGNORE}", rel)

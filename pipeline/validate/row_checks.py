"""Checks of one row's content, whatever the format it was read from: token maps (dtype, shape, one
map row per token, finite and non-negative; uint8 maps: one scale per map, each map coded by its
own maximum), word spans, the image (decodes, recorded size) and the overlay (decodes, its size,
words of the prompt)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .context import Validation

IGNORE = 255  # the label value of ignored pixels
MISSING = object()  # a scale a row does not carry at all (``None`` is a null cell)


def check_row(v: Validation, shard: str, rel: str, row: int, tokens: list, maps: np.ndarray | None,
              png: bytes | None, words: list | None = None, maps_error: str = "", *, scale: Any = MISSING,
              overlay: Any = MISSING) -> None:
    """Report what is wrong with row ``row`` of the file ``rel``; ``maps_error`` says why maps did
    not decode; ``scale`` is the row's ``token_map_scale`` (uint8 maps) and ``overlay`` its
    ``(jpeg bytes, overlay_words)`` (runs with the overlay)."""
    where = f"row {row}"
    if maps_error:
        v.add(shard, "map_shape", f"{where}: {maps_error}", rel)
    elif maps is not None:
        _check_maps(v, shard, rel, where, tokens, maps, scale)
    if words:
        _check_words(v, shard, rel, where, tokens, words)
    image = _decoded(v, shard, rel, where, png, "image", "image")
    if v.overlay:
        jpeg, drawn = (None, None) if overlay is MISSING else overlay
        _check_overlay(v, shard, rel, where, jpeg, drawn, words or [], image)


def _check_maps(v: Validation, shard: str, rel: str, where: str, tokens: list, maps: np.ndarray, scale: Any) -> None:
    h, w = v.map_size  # type: ignore[misc]
    _check_dtype_and_values(v, shard, rel, where, maps, "maps", scale)
    if maps.ndim != 3 or maps.shape[1:] != (h, w):
        v.add(shard, "map_shape", f"{where}: maps of shape {maps.shape}, expected (n, {h}, {w})", rel)
    elif maps.shape[0] != len(tokens):
        v.add(shard, "tokens", f"{where}: {maps.shape[0]} map rows for {len(tokens)} tokens", rel)


def _check_dtype_and_values(v: Validation, shard: str, rel: str, where: str, maps: np.ndarray, what: str = "maps",
                            scale: Any = MISSING) -> None:
    from schemas.maps import QUANTISED

    if maps.dtype != np.dtype(v.map_dtype):
        v.add(shard, "map_dtype", f"{where}: {what} are {maps.dtype}, features say {v.map_dtype}", rel)
    if v.map_dtype == QUANTISED:
        _check_scale(v, shard, rel, where, maps, what, scale)
        return
    values = maps.astype(np.float32)
    if not np.isfinite(values).all():
        v.add(shard, "map_values", f"{where}: {what} contain NaN or infinite values", rel)
    elif (values < 0).any():
        v.add(shard, "map_values", f"{where}: {what} contain negative values", rel)


def _check_scale(v: Validation, shard: str, rel: str, where: str, maps: np.ndarray, what: str, scale: Any) -> None:
    """uint8 maps: one finite, non-negative scale per map, and each map coded by its own maximum
    (its peak is code 255, or all codes 0 with scale 0: ``schemas.maps``)."""
    if scale is MISSING or scale is None:
        v.add(shard, "map_values", f"{where}: {what} are uint8 codes without their scales", rel)
        return
    try:
        scales = np.asarray(scale, dtype=np.float32)
    except (TypeError, ValueError) as error:
        v.add(shard, "map_shape", f"{where}: {what} scales do not form an array ({error})", rel)
        return
    if scales.shape != maps.shape[:-2]:
        v.add(shard, "map_shape", f"{where}: {scales.shape} scales for {what} of shape {maps.shape}", rel)
        return
    if not np.isfinite(scales).all() or (scales < 0).any():
        v.add(shard, "map_values", f"{where}: {what} scales are not finite and non-negative", rel)
        return
    peaks = maps.reshape(*maps.shape[:-2], -1).max(-1) if maps.size else np.zeros(maps.shape[:-2], np.uint8)
    if ((scales > 0) & (peaks != 255)).any() or ((scales == 0) & (peaks != 0)).any():
        v.add(shard, "map_values", f"{where}: {what} are not coded by their own maximum (peak code must be 255)", rel)


def check_timestep_maps(v: Validation, shard: str, rel: str, row: int, tokens: list, maps: np.ndarray | None,
                        error: str = "", scale: Any = MISSING) -> None:
    """A row's per-timestep maps: ``(K, len(tokens), h, w)`` in the map dtype, finite, non-negative
    (uint8: with ``scale``, the row's ``timestep_map_scale``)."""
    where = f"row {row}"
    if error or maps is None:
        v.add(shard, "map_shape", f"{where}: timestep_maps {error or 'missing'}", rel)
        return
    expected = (v.timestep_bins, len(tokens), *v.map_size)  # type: ignore[misc]
    if maps.shape != expected:
        v.add(shard, "map_shape", f"{where}: timestep_maps of shape {maps.shape}, expected {expected}", rel)
        return
    _check_dtype_and_values(v, shard, rel, where, maps, "timestep_maps", scale)


def check_concept_maps(v: Validation, shard: str, rel: str, row: int, concepts: Any, maps: np.ndarray | None,
                       error: str = "", scale: Any = MISSING) -> None:
    """A row's ConceptAttention maps: a list of distinct concept names, one ``(h, w)`` map each in
    the map dtype, finite, non-negative, and (float maps) at most 1 summed over concepts per pixel
    (a softmax's mean; uint8: with ``scale``, the row's ``concept_map_scale``)."""
    where = f"row {row}"
    if error or maps is None:
        v.add(shard, "map_shape", f"{where}: concept_maps {error or 'missing'}", rel)
        return
    if not isinstance(concepts, list) or not all(isinstance(c, str) and c for c in concepts) or len(set(concepts)) != len(concepts):
        v.add(shard, "concepts", f"{where}: concepts {concepts!r} are not a list of distinct names", rel)
        return
    expected = (len(concepts), *v.map_size)  # type: ignore[misc]
    if maps.shape != expected:
        v.add(shard, "map_shape", f"{where}: concept_maps of shape {maps.shape}, expected {expected}", rel)
        return
    _check_dtype_and_values(v, shard, rel, where, maps, "concept_maps", scale)
    from schemas.maps import QUANTISED

    if v.map_dtype != QUANTISED and maps.size and v.map_size == tuple(v.run_grid or v.map_size):
        total = maps.astype(np.float32).sum(0)
        if np.isfinite(total).all() and (total > 1.0 + 2e-2).any():
            v.add(shard, "map_values", f"{where}: concept_maps sum to {float(total.max()):.3f} > 1 at a pixel "
                  "(a softmax over concepts sums to 1)", rel)


def _check_words(v: Validation, shard: str, rel: str, where: str, tokens: list, words: list[dict[str, Any]]) -> None:
    for word in words:
        if not 0 <= word["start"] < word["end"] <= len(tokens):
            v.add(shard, "tokens", f"{where}: word {word['word']!r} spans [{word['start']}, {word['end']}) "
                  f"outside {len(tokens)} tokens", rel)
            return


def _decoded(v: Validation, shard: str, rel: str, where: str, png: bytes | None, kind: str, what: str,
             expected: tuple[int, int] | None = None) -> Any:
    """The decoded image of ``png``, or ``None`` with a problem of ``kind`` reported; a size other
    than ``expected`` (width, height; default run.json's image size) is reported too."""
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
    source = "expected"
    if expected is None and v.image_size:
        expected, source = (v.image_size[1], v.image_size[0]), "run.json says"
    if expected and size != expected:
        v.add(shard, kind, f"{where}: {what} is {size[0]}x{size[1]}, {source} {expected[0]}x{expected[1]}", rel)
    return decoded


def _check_overlay(v: Validation, shard: str, rel: str, where: str, jpeg: bytes | None, drawn: list | None,
                   words: list[dict[str, Any]], image: Any) -> None:
    """The overlay decodes at the image's size (run.json's, else the decoded image's) scaled to
    ``overlay_size``, and draws words of the prompt."""
    from transforms.attribution.overlay import OVERLAY_COLOURS, overlay_size

    size = (v.image_size[1], v.image_size[0]) if v.image_size else image.size if image is not None else None
    _decoded(v, shard, rel, where, jpeg, "image", "overlay", overlay_size(size) if size else None)
    if drawn is None:
        v.add(shard, "image", f"{where}: no overlay_words", rel)
        return
    known = {str(w["word"]).lower() for w in words}
    stray = [w for w in drawn if str(w).lower() not in known]
    if stray or len(drawn) > len(OVERLAY_COLOURS):
        v.add(shard, "image", f"{where}: overlay_words {drawn!r} are not up to {len(OVERLAY_COLOURS)} words of the prompt", rel)


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

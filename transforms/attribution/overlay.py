"""Word maps, masks and heat-map overlays from a dataset row (for notebooks and the preview).

A *row* is what ``datasets.load_dataset(...)[i]`` returns for our features: ``image`` (PIL image,
or ``{"bytes": ...}`` without decoding), ``tokens``, ``token_maps`` (nested lists or an array of
shape ``(len(tokens), h, w)``) and ``words`` (``[{"word", "start", "end"}]``)::

    from datasets import load_dataset
    from transforms.attribution.overlay import word_overlay

    row = load_dataset("org/name", split="train")[0]
    result = word_overlay(row, "cat")       # every occurrence of "cat", DAAM's merge rule
    result.map, result.mask, result.image   # (h, w) map, (H, W) τ = 0.4 mask, PIL overlay

Semantics follow DAAM (``heatmap.py``, ``words.py``): the word map is the mean of the token-map rows of all
tokens of all occurrences; the mask is the map resized bicubically to the image size, min-max
normalised (+1e-8) and thresholded ``> τ``. Unlike DAAM's ``plot_overlay`` this works for
non-square images (the image's own size is used), lets you pick one occurrence of a repeated
word (``occurrence=k`` or ``word=<index into row["words"]>``), handles multi-token and
multi-word queries (``"armadillo"``, ``"red sofa"``) through the stored word spans, and can draw
the mask outline. matplotlib (``pip install daam-datasets[preview]``) is imported only to colour
maps; torch only for the bicubic resize, so results equal the pipeline's. Maps stored as uint8
(``--map-dtype uint8``) are dequantised with the row's scales (``schemas.maps.row_maps``).

``words_overlay`` draws the dataset's ``overlay`` column (no matplotlib): the strongest content
words of a row, each in its own colour, on the image scaled to at most ``OVERLAY_SIDE`` px.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.maps import row_maps as decoded_maps

from .config import DEFAULT_CMAP, DEFAULT_THRESHOLD
from .words import FUNCTION_WORDS, Span, row_spans

OVERLAY_SIDE = 256  # px: the longer side of the stored overlay, at most (smaller images keep their size)
OVERLAY_QUALITY = 85  # JPEG quality of the stored overlay
OVERLAY_WORDS = 3  # words drawn in the stored overlay, at most
OVERLAY_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200))  # red, green, blue: the 1st, 2nd, 3rd word
OVERLAY_ALPHA = 0.6  # tint of a word's mask at its hottest pixel


@dataclass
class WordOverlay:
    """A word's map, mask and overlay for one row.

    ``spans`` are the token spans ``[start, end)`` used (one per occurrence), ``map`` the word map
    at latent resolution ``(h, w)``, ``heat`` the map resized to the image and min-max normalised
    to ``[0, 1]`` (``(H, W)``), ``mask`` the DAAM mask ``heat > threshold`` and ``image`` the
    overlay (RGB PIL image of the image size, or ``size`` when given).
    """

    word: str
    spans: list[Span]
    tokens: list[str]
    map: np.ndarray
    heat: np.ndarray
    mask: np.ndarray
    image: Any
    threshold: float


# -- row access ------------------------------------------------------------------------------------
def row_image(row: dict[str, Any]) -> Any:
    """The row's image as an RGB PIL image (decoded PIL, ``{"bytes": …}`` dict, bytes or array)."""
    from PIL import Image

    image = row["image"]
    if isinstance(image, dict):
        if not image.get("bytes"):
            with open(image["path"], "rb") as fh:
                image = {"bytes": fh.read()}
        image = image["bytes"]
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


def row_maps(row: dict[str, Any]) -> np.ndarray:
    """The row's token maps as a float32 array ``(len(tokens), h, w)`` (uint8 maps dequantised)."""
    maps = decoded_maps(row)
    if maps.ndim != 3:
        raise ValueError(f"token_maps must have 3 dimensions (tokens, h, w), got shape {maps.shape}")
    return maps


def find_spans(row: dict[str, Any], word: str | int, occurrence: int | None = None, tokenizer: Any = None) -> list[Span]:
    """Token spans ``[start, end)`` of ``word`` in the row.

    ``word`` is a query (one or more words, any case) or an ``int`` index into ``row["words"]``
    (exactly that entry). A query is matched by ``words.row_spans``: every run of consecutive
    ``words`` entries equal to its words (CLIP splits punctuation off, so ``"cat,"`` is two words),
    or with a CLIP ``tokenizer`` DAAM's exact token-sequence rule on the row's ``token_ids`` (so
    ``"dog"`` does not match "hotdog"; neither does the word rule). ``occurrence=k`` keeps only the k-th match
    (0-based; negative counts from the end). Raises ``ValueError`` when nothing matches.
    """
    words = list(row["words"])
    if isinstance(word, (int, np.integer)) and not isinstance(word, bool):
        if not -len(words) <= int(word) < len(words):
            raise ValueError(f"word index {word} out of range: the row has {len(words)} words")
        entry = words[int(word)]
        spans = [(int(entry["start"]), int(entry["end"]))]
    else:
        spans = row_spans(row, str(word), tokenizer)
    if occurrence is not None:
        if not -len(spans) <= occurrence < len(spans):
            raise ValueError(f"occurrence {occurrence} of {word!r}: it occurs {len(spans)} times")
        spans = [spans[occurrence]]
    return spans


# -- maps and masks --------------------------------------------------------------------------------
def spans_map(maps: np.ndarray, spans: Sequence[Span]) -> np.ndarray:
    """Mean of the map rows of every token in ``spans`` (DAAM's merge of tokens and occurrences)."""
    rows = [i for start, end in spans for i in range(start, end)]
    if not rows:
        raise ValueError("no tokens to merge")
    if max(rows) >= len(maps):
        raise ValueError(f"token {max(rows)} has no map row ({len(maps)} rows)")
    return maps[rows].mean(0).astype(np.float32)


def word_map(row: dict[str, Any], word: str | int, occurrence: int | None = None, tokenizer: Any = None) -> np.ndarray:
    """The word map ``(h, w)`` at latent resolution, float32 (see ``find_spans`` for ``word``)."""
    return spans_map(row_maps(row), find_spans(row, word, occurrence, tokenizer))


def heat_and_mask(
    word_map_: np.ndarray, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """The map resized bicubically to ``size`` (height, width) and min-max normalised, and its
    DAAM mask ``> threshold`` (the pipeline's own ``heatmap.word_heat`` and ``heatmap.heat_mask``)."""
    import torch

    from .heatmap import heat_mask, word_heat

    big = word_heat(torch.from_numpy(np.ascontiguousarray(word_map_, dtype=np.float32)), size)
    heat = big.clamp(0, 1).numpy()
    return heat.astype(np.float32), heat_mask(big, threshold).numpy()


def word_mask(
    row: dict[str, Any],
    word: str | int,
    threshold: float = DEFAULT_THRESHOLD,
    occurrence: int | None = None,
    tokenizer: Any = None,
) -> np.ndarray:
    """DAAM's boolean mask ``(H, W)`` of ``word`` at the row's image size."""
    width, height = row_image(row).size
    return heat_and_mask(word_map(row, word, occurrence, tokenizer), (height, width), threshold)[1]


# -- drawing ---------------------------------------------------------------------------------------
def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, mode="edge")
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )


def mask_outline(mask: np.ndarray, width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer boundary rings of a boolean mask, each ``width`` pixels wide."""
    inner_core = mask.copy()
    outer = ~mask
    for _ in range(max(1, width)):
        inner_core = _erode(inner_core)
        outer = _erode(outer)
    return mask & ~inner_core, ~mask & ~outer


def colorize(heat: np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """RGB floats ``(H, W, 3)`` in [0, 1] of a [0, 1] map through a matplotlib colour map."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[cmap](heat))[..., :3].astype(np.float32)


def compose(
    image: Any,
    heat: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 1.0,
    size: tuple[int, int] | None = None,
    outline_width: int | None = None,
) -> Any:
    """Overlay ``heat`` (``[0, 1]``, image size) on ``image`` and outline ``mask``.

    DAAM's ``plot_overlay`` draws the colour-mapped map under the image made transparent where the
    map is hot: ``out = image·(1 − a) + cmap(heat)·a`` with ``a = alpha·heat`` (``alpha=1`` is
    DAAM's look). ``size`` (width, height) resizes the result; the outline (white inside, black
    outside) is drawn at the final size, ``outline_width`` pixels wide (default: 1 per 256 px).
    """
    from PIL import Image

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if rgb.shape[:2] != heat.shape:
        raise ValueError(f"heat map {heat.shape} does not match the image {rgb.shape[:2]}")
    a = (alpha * heat)[..., None]
    out = rgb * (1 - a) + colorize(heat, cmap) * a
    result = Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))
    if size is not None and tuple(size) != result.size:
        result = result.resize(tuple(size), Image.Resampling.LANCZOS)
    if mask is not None and mask.any():
        if mask.shape != (result.size[1], result.size[0]):
            mask = np.asarray(Image.fromarray(mask).resize(result.size, Image.Resampling.NEAREST))
        width = outline_width or max(1, round(max(result.size) / 256))
        inner, outer = mask_outline(mask, width)
        pixels = np.array(result)
        pixels[outer] = (0, 0, 0)
        pixels[inner] = (255, 255, 255)
        result = Image.fromarray(pixels)
    return result


def word_overlay(
    row: dict[str, Any],
    word: str | int,
    *,
    occurrence: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 1.0,
    outline: bool = True,
    size: tuple[int, int] | None = None,
    tokenizer: Any = None,
) -> WordOverlay:
    """Map, mask and overlay image of ``word`` in ``row`` (see ``find_spans`` and ``compose``).

    Map and mask are computed at the image's own size (``(H, W)``, any aspect ratio); ``size``
    (width, height) only scales the overlay image.
    """
    image = row_image(row)
    spans = find_spans(row, word, occurrence, tokenizer)
    latent = spans_map(row_maps(row), spans)
    heat, mask = heat_and_mask(latent, (image.size[1], image.size[0]), threshold)
    picture = compose(image, heat, mask if outline else None, cmap=cmap, alpha=alpha, size=size)
    tokens = list(row.get("tokens") or [])
    label = word if isinstance(word, str) else str(row["words"][int(word)]["word"])
    return WordOverlay(
        word=label,
        spans=spans,
        tokens=[t for s, e in spans for t in tokens[s:e]],
        map=latent,
        heat=heat,
        mask=mask,
        image=picture,
        threshold=threshold,
    )


def plot_word(row: dict[str, Any], word: str | int, ax: Any = None, **kwargs: Any) -> Any:
    """Show ``word_overlay(row, word, **kwargs)`` on a matplotlib axis (a new figure if none);
    returns the axis."""
    result = word_overlay(row, word, **kwargs)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 5 * result.image.size[1] / result.image.size[0]))
    ax.imshow(result.image)
    ax.set_title(f"{result.word!r}  (tokens {', '.join(result.tokens)}; τ = {result.threshold})", fontsize=9)
    ax.axis("off")
    return ax


# -- the dataset's overlay column ---------------------------------------------------------------------
def peakedness(word_map_: np.ndarray) -> float:
    """How focused a word map is: its peak over its mean (+1e-8)."""
    return float(word_map_.max() / (word_map_.mean() + 1e-8))


def ranked_words(maps: np.ndarray, words: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the content words of ``words`` (letters only, not in ``FUNCTION_WORDS``), the most
    peaked map first (ties: the earlier word)."""
    scores = {
        k: peakedness(spans_map(maps, [(int(entry["start"]), int(entry["end"]))]))
        for k, entry in enumerate(words)
        if str(entry["word"]).isalpha() and str(entry["word"]).lower() not in FUNCTION_WORDS
    }
    return sorted(scores, key=lambda k: -scores[k])


def strongest_words(maps: np.ndarray, words: Sequence[dict[str, Any]], k: int = OVERLAY_WORDS) -> list[tuple[str, list[Span]]]:
    """Up to ``k`` distinct content words, most peaked first, each with the spans of all its
    occurrences (merged as DAAM merges a repeated word)."""
    chosen: list[tuple[str, list[Span]]] = []
    for index in ranked_words(maps, words):
        text = str(words[index]["word"]).lower()
        if any(text == seen.lower() for seen, _ in chosen):
            continue
        spans = [(int(w["start"]), int(w["end"])) for w in words if str(w["word"]).lower() == text]
        chosen.append((str(words[index]["word"]), spans))
        if len(chosen) == k:
            break
    return chosen


def overlay_size(size: tuple[int, int], side: int = OVERLAY_SIDE) -> tuple[int, int]:
    """``size`` (width, height) scaled down so its longer side is at most ``side``."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def words_overlay(
    image: Any, maps: np.ndarray, words: Sequence[dict[str, Any]], *, k: int = OVERLAY_WORDS,
    side: int = OVERLAY_SIDE, threshold: float = DEFAULT_THRESHOLD,
) -> tuple[Any, list[str]]:
    """The ``overlay`` picture of a row and the words it draws (``strongest_words``).

    The image is scaled to ``overlay_size``; at that size each word's map is resized and min-max
    normalised (``heat_and_mask``), its τ mask tinted in ``OVERLAY_COLOURS[i]`` by ``OVERLAY_ALPHA``
    times the heat (where masks overlap, the hotter word's colour) and outlined in it. A row
    without content words gives the scaled image and no words.
    """
    from PIL import Image

    rgb_image = image.convert("RGB")
    shown = overlay_size(rgb_image.size, side)
    base = rgb_image.resize(shown, Image.Resampling.LANCZOS) if shown != rgb_image.size else rgb_image
    chosen = strongest_words(maps, words, min(k, len(OVERLAY_COLOURS)))
    if not chosen:
        return base, []
    heats, masks = zip(*(heat_and_mask(spans_map(maps, spans), (shown[1], shown[0]), threshold) for _, spans in chosen))
    weights = np.stack([heat * mask for heat, mask in zip(heats, masks)])
    winner = weights.argmax(0)
    alpha = (OVERLAY_ALPHA * np.take_along_axis(weights, winner[None], 0)[0])[..., None]
    colours = np.asarray(OVERLAY_COLOURS[: len(chosen)], dtype=np.float32) / 255.0
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    pixels = np.clip((rgb * (1 - alpha) + colours[winner] * alpha) * 255 + 0.5, 0, 255).astype(np.uint8)
    for colour, mask in zip(OVERLAY_COLOURS, masks):
        pixels[mask_outline(mask, 1)[0]] = colour
    return Image.fromarray(pixels), [text for text, _ in chosen]


def encode_jpeg(image: Any, quality: int = OVERLAY_QUALITY) -> bytes:
    """JPEG bytes of an RGB PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

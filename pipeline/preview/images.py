"""The gallery's pictures: each sample's image and word overlays (JPEG) and the card's grid (PNG).

Overlays are DAAM's (``transforms.attribution.overlay``: the word map resized to the image, min-max
normalised, blended through the colour map, its τ mask outlined). matplotlib comes with the
``preview`` extra and is imported on use.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from transforms.attribution.config import DEFAULT_CMAP, DEFAULT_THRESHOLD
from transforms.attribution.overlay import (
    compose,
    encode_jpeg,
    heat_and_mask,
    ranked_words,
    row_image,
    row_maps,
    spans_map,
)

from ..errors import PreviewError

JPEG_QUALITY = 88


@dataclass
class SamplePictures:
    """One row's pictures at gallery size: the image, one overlay per entry of ``row["words"]``
    and, for ``--concept-maps`` outputs, one per concept of ``row["concepts"]``."""

    image: Image.Image
    overlays: list[Image.Image] = field(default_factory=list)
    concept_overlays: list[Image.Image] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every picture of the sample."""
        return self.image.size


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, or a ``PreviewError`` naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise PreviewError("preview needs matplotlib: pip install 'daam-datasets[preview]'") from None
    return matplotlib


ENLARGE_BELOW = 128  # px: images with a longer side than this are only ever scaled down


def fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` (width, height) scaled down so its longest side is at most ``longest``; an image
    smaller than ``ENLARGE_BELOW`` (e.g. colour-world's 32 px) is enlarged to ``longest`` so its
    objects can be seen."""
    width, height = size
    scale = longest / max(width, height)
    if max(width, height) >= ENLARGE_BELOW:
        scale = min(1.0, scale)
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg(image: Image.Image) -> bytes:
    """JPEG bytes of an RGB image."""
    return encode_jpeg(image, JPEG_QUALITY)


def _word_spans(entry: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(entry["start"]), int(entry["end"]))]


def sample_pictures(
    row: dict[str, Any],
    size: int,
    threshold: float = DEFAULT_THRESHOLD,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 1.0,
) -> SamplePictures:
    """The row's image and each word's overlay, scaled so the longest side is ``size`` at most;
    maps and masks are computed at the image's own size."""
    image = row_image(row)
    maps = row_maps(row)
    shown = fit(image.size, size)
    enlarged = shown[0] > image.size[0]
    resample = Image.Resampling.NEAREST if enlarged else Image.Resampling.LANCZOS  # keep small images' edges
    base = image.resize(shown, resample) if shown != image.size else image
    pictures = SamplePictures(base)

    def overlay(latent: np.ndarray) -> Image.Image:
        heat, mask = heat_and_mask(latent, (image.size[1], image.size[0]), threshold)
        return compose(image, heat, mask, cmap=cmap, alpha=alpha, size=shown)

    pictures.overlays = [overlay(spans_map(maps, _word_spans(entry))) for entry in row["words"]]
    concept_maps = row.get("concept_maps") if row.get("concepts") else None
    if concept_maps is not None:
        pictures.concept_overlays = [overlay(np.asarray(m, dtype=np.float32)) for m in concept_maps]
    return pictures


def grid_word(row: dict[str, Any]) -> int:
    """Index of the word shown on the grid: the content word whose map is most peaked (the first
    word of the dataset's ``overlay``; word 0 when the prompt has no content word)."""
    ranked = ranked_words(row_maps(row), row["words"])
    return ranked[0] if ranked else 0


def render_grid(tiles: Sequence[tuple[Image.Image, str, str]], columns: int = 4) -> bytes:
    """PNG of overlay tiles ``(image, word, prompt)`` in a grid, titled with the word and prompt;
    a small white PNG when there are no tiles."""
    if not tiles:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
        return buffer.getvalue()
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    figure = Figure(figsize=(2.6 * columns, 3.1 * rows), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    for i, (image, word, prompt) in enumerate(tiles):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(np.asarray(image))
        ax.set_axis_off()
        text = textwrap.shorten(prompt, 90, placeholder=" …")
        ax.set_title(f"“{word}”\n" + "\n".join(textwrap.wrap(text, 38)[:2]), fontsize=7.5, loc="left")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.06, hspace=0.35)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()

"""``daam-datasets preview OUTPUT``: a static HTML gallery of an output and the card's grid image.

Writes ``OUTPUT/preview/``: ``index.html`` (self-contained: CSS and script inlined from the package
files, no server, no CDN), ``assets/NNN/image.jpg`` (image NNN, scaled to ``--size``),
``assets/NNN/wKK.jpg`` (word K's overlay: DAAM's jet overlay with the τ mask outlined; a folder per
sample keeps folders far below the Hub's 10,000 files) and ``grid.png`` (a few samples with one word
each), which the dataset card embeds. ``preview/`` lies outside every data pattern, so
``load_dataset(OUTPUT)`` reads the same rows as before.

In the gallery, hover or focus a word to see its heat map, click to pin it; ``index.html?word=K``
(index, or a word's text) selects word K in every sample, ``?sample=I&word=K`` in sample I only.
Outputs of ``--concept-maps`` also get ``assets/NNN/cKK.jpg`` (concept K's ConceptAttention
overlay) and a switch between DAAM word maps and concept maps (``?maps=concept`` on load): in the
concept view a word shows the concept of the same name, and each sample's concepts are buttons.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from dataclasses import dataclass

from PIL import Image

from transforms.attribution.config import DEFAULT_CMAP, DEFAULT_THRESHOLD
from transforms.shards.layout import CARD_FILE, PREVIEW_DIR, OutputLayout

from ..card import PREVIEW_GALLERY, PREVIEW_IMAGE, with_preview, write_card
from ..errors import PreviewError
from ..ownership import record_preview, refusal, remove_ours, require_usable_output, scan
from .images import grid_word, jpeg, render_grid, require_matplotlib, sample_pictures
from .page import SampleView, render_page, run_facts, sample_view
from .rows import read_rows

logger = logging.getLogger(__name__)

ASSETS = "assets"
DEFAULT_SAMPLES = 48
DEFAULT_SIZE = 256
DEFAULT_GRID = 8


@dataclass
class PreviewResult:
    """What ``write_preview`` wrote: the gallery path, samples, overlay images and the grid."""

    index: str
    samples: int
    overlays: int
    grid: str
    card_updated: bool


def write_preview(
    output: str,
    n: int = DEFAULT_SAMPLES,
    size: int = DEFAULT_SIZE,
    grid: int = DEFAULT_GRID,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    update_card: bool = True,
) -> PreviewResult:
    """Write ``OUTPUT/preview/`` (gallery, assets, grid) and embed the grid in the card."""
    require_matplotlib()
    if n < 1:
        raise PreviewError(f"--n must be at least 1, got {n}")
    layout = OutputLayout(output)
    require_usable_output(layout, "preview", "preview writes only into an output of daam-datasets")
    rows = read_rows(output, n)
    samples: list[SampleView] = []
    tiles: list[tuple[Image.Image, str, str]] = []
    overlays = 0
    with tempfile.TemporaryDirectory(prefix="daam-preview-") as staging:
        for i, row in enumerate(rows):
            pictures = sample_pictures(row, size, threshold=threshold, cmap=cmap, alpha=alpha)
            folder = f"{ASSETS}/{i:03d}"
            base = f"{folder}/image.jpg"
            _write(staging, base, jpeg(pictures.image))
            names = [f"{folder}/w{k:02d}.jpg" for k in range(len(pictures.overlays))]
            concepts = [f"{folder}/c{k:02d}.jpg" for k in range(len(pictures.concept_overlays))]
            for name, picture in zip(names + concepts, pictures.overlays + pictures.concept_overlays):
                _write(staging, name, jpeg(picture))
            overlays += len(names) + len(concepts)
            if len(tiles) < grid and pictures.overlays:
                k = grid_word(row)
                tiles.append((pictures.overlays[k], str(row["words"][k]["word"]), str(row["prompt"])))
            samples.append(sample_view(i, row, base, names, pictures.size, concepts))
        page = render_page(samples, run_facts(layout, len(rows)), threshold, cmap)
        _write(staging, posixpath.basename(PREVIEW_GALLERY), page.encode("utf-8"))
        _write(staging, posixpath.basename(PREVIEW_IMAGE), render_grid(tiles))
        _replace_folder(layout, staging, PREVIEW_DIR)
    card_updated = update_card and _embed_in_card(layout)
    logger.debug("preview: %d samples, %d overlays in %s", len(rows), overlays, PREVIEW_DIR)
    return PreviewResult(
        index=layout.path(PREVIEW_GALLERY),
        samples=len(rows),
        overlays=overlays,
        grid=layout.path(PREVIEW_IMAGE),
        card_updated=card_updated,
    )


def _write(staging: str, rel: str, data: bytes) -> None:
    """Write ``data`` to ``staging/rel`` (``/``-separated), making its folder."""
    path = os.path.join(staging, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _replace_folder(layout: OutputLayout, staging: str, folder: str) -> None:
    """Replace an earlier preview's files in ``OUTPUT/folder`` by the staged ones (its stale assets
    go, a user's files there stay): recorded in ``.daam-preview.json`` before they are written."""
    staged = {}
    for parent, _, files in os.walk(staging):
        for name in files:
            local = os.path.join(parent, name)
            staged[posixpath.join(folder, os.path.relpath(local, staging).replace(os.sep, "/"))] = local
    found = scan(layout)
    clash = sorted(set(staged) & set(found.foreign))
    if clash:
        raise PreviewError(refusal(f"preview {layout.root}", clash, "move them away and rerun",
                                   "holds files daam-datasets did not write where the gallery goes"))
    removed = remove_ours(layout, [p for p in found.ours if p.startswith(folder + "/")], found)
    logger.debug("preview: %s", removed.line("the earlier preview"))
    record_preview(layout, sorted(staged))
    for rel, local in sorted(staged.items()):
        remote = layout.path(rel)
        layout.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
        layout.fs.put_file(local, remote)


def _embed_in_card(layout: OutputLayout) -> bool:
    """Embed ``grid.png`` in ``README.md`` when there is a card without it; whether it changed."""
    path = layout.path(CARD_FILE)
    if not layout.exists(path):
        return False
    if not write_card(layout, with_preview(layout.read_text(path), PREVIEW_IMAGE)):
        return False
    logger.debug("%s embeds %s", layout.relative(path), PREVIEW_IMAGE)
    return True

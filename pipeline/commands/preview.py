"""``daam-datasets preview``: arguments and ``main``."""

from __future__ import annotations

import argparse
from typing import Any

from transforms.attribution.config import DEFAULT_CMAP, DEFAULT_THRESHOLD

from .. import argtypes
from ..card import PREVIEW_IMAGE
from ..errors import PreviewError
from ..preview import DEFAULT_GRID, DEFAULT_SAMPLES, DEFAULT_SIZE, require_matplotlib, write_preview

MIN_SIZE = 16  # px: below this the gallery's words are unreadable
MAX_SIZE = 4096  # px: the gallery's images, not the dataset's
MAX_SAMPLES = 1000  # samples in one HTML page
MAX_GRID = 64  # tiles on the card's grid.png


def register(subparsers: Any) -> None:
    """Add the ``preview`` subcommand."""
    parser = subparsers.add_parser(
        "preview",
        help="write a static HTML gallery (OUTPUT/preview/index.html) and the card's grid image",
        description="Write OUTPUT/preview/: index.html, a self-contained gallery (no server, no CDN) "
        "where hovering or clicking a word of a prompt overlays its heat map and τ mask on the image, "
        "and grid.png, a few samples with one word each, which the dataset card embeds. "
        "Needs matplotlib (pip install 'daam-datasets[preview]').",
    )
    argtypes.guard(parser)
    parser.add_argument("output", help="output folder (local, gs:// or s3://)")
    parser.add_argument("--n", type=argtypes.integer(1, MAX_SAMPLES), default=DEFAULT_SAMPLES, help=f"samples to show (default {DEFAULT_SAMPLES})")
    parser.add_argument("--size", type=argtypes.integer(MIN_SIZE, MAX_SIZE), default=DEFAULT_SIZE, help=f"longest image side in the gallery, px (default {DEFAULT_SIZE})")
    parser.add_argument("--grid", type=argtypes.integer(0, MAX_GRID), default=DEFAULT_GRID, help=f"samples on grid.png (default {DEFAULT_GRID})")
    parser.add_argument("--cmap", default=DEFAULT_CMAP, help=f"matplotlib colour map (default {DEFAULT_CMAP}, as DAAM)")
    parser.add_argument("--alpha", type=argtypes.number(0.0, 1.0), default=1.0, help="overlay strength, 1 = DAAM's plot_overlay (default 1)")
    parser.add_argument("--threshold", type=argtypes.number(0.0, 1.0), default=DEFAULT_THRESHOLD, help=f"τ of the outlined mask (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--no-card", action="store_true", help="do not embed grid.png in README.md")
    parser.set_defaults(func=main, accepts_extra=False)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Write the preview; a ``PreviewError`` is reported by the command line as one line (exit 2)."""
    matplotlib = require_matplotlib()
    if args.cmap not in matplotlib.colormaps:
        raise PreviewError(f"--cmap {args.cmap!r}: not a matplotlib colour map")
    result = write_preview(
        args.output, n=args.n, size=args.size, grid=args.grid, cmap=args.cmap,
        alpha=args.alpha, threshold=args.threshold, update_card=not args.no_card,
    )
    card = f"; card embeds {PREVIEW_IMAGE}" if result.card_updated else ""
    print(f"{result.samples} samples, {result.overlays} word overlays -> {result.index}{card}")
    return 0

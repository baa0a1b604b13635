"""``daam-datasets preview``: arguments and ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..preview import *  # noqa: F403  (narrowed by the preview package split)


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
    parser.add_argument("output", help="output folder (local, gs:// or s3://)")
    parser.add_argument("--n", type=int, default=DEFAULT_SAMPLES, help=f"samples to show (default {DEFAULT_SAMPLES})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"longest image side in the gallery, px (default {DEFAULT_SIZE})")
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID, help=f"samples on grid.png (default {DEFAULT_GRID})")
    parser.add_argument("--cmap", default="jet", help="matplotlib colour map (default jet, as DAAM)")
    parser.add_argument("--alpha", type=float, default=1.0, help="overlay strength, 1 = DAAM's plot_overlay (default 1)")
    parser.add_argument("--threshold", type=float, default=0.4, help="τ of the outlined mask (default 0.4)")
    parser.add_argument("--no-card", action="store_true", help="do not embed grid.png in README.md")
    parser.set_defaults(func=main, accepts_extra=False)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Write the preview; one line on stderr for user-facing errors."""
    try:
        try:
            import matplotlib
        except ImportError:
            raise PreviewError("preview needs matplotlib: pip install 'daam-datasets[preview]'") from None
        if args.cmap not in matplotlib.colormaps:
            raise PreviewError(f"--cmap {args.cmap!r}: not a matplotlib colour map")
        if args.size < 16:
            raise PreviewError(f"--size must be at least 16, got {args.size}")
        result = write_preview(
            args.output, n=args.n, size=args.size, grid=max(0, args.grid), cmap=args.cmap,
            alpha=args.alpha, threshold=args.threshold, update_card=not args.no_card,
        )
    except PreviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    card = "; card embeds preview/grid.png" if result.card_updated else ""
    print(f"{result.samples} samples, {result.overlays} word overlays -> {result.index}{card}")
    return 0


"""``daam-datasets export``: arguments and ``main``."""

from __future__ import annotations

import argparse
from typing import Any

from .. import argtypes
from ..export import DEFAULT_LAYOUT, DEFAULT_VALIDATION_FRACTION, LAYOUTS, MAX_VALIDATION_FRACTION, export_output


def fraction_argument(parser: argparse.ArgumentParser, default: float | None = DEFAULT_VALIDATION_FRACTION) -> None:
    """Add ``--validation-fraction`` (shared with ``publish --config segmentation``)."""
    parser.add_argument(
        "--validation-fraction", type=argtypes.number(0.0, MAX_VALIDATION_FRACTION), default=default,
        metavar="F", help=f"share of rows in the validation split, chosen by a hash of the row id: the same row always "
        f"lands in the same split (default {DEFAULT_VALIDATION_FRACTION:g}; 0: train only)",
    )


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="write the segmentation config (run --classes) as a training folder: hf, mmseg or voc",
        description="Export the segmentation config of OUTPUT (image + label map per row, from run --classes) "
        "to DIR as a Hugging Face dataset whose default config it is (hf: for transformers' "
        "run_semantic_segmentation.py), MMSegmentation's folders (mmseg) or PASCAL VOC's (voc), split into "
        "train and validation by a hash of the row id. DIR must be new, empty or an earlier export: a rerun "
        "replaces only the files export wrote there (listed in DIR/.daam-export.json), never a user's file.",
    )
    argtypes.guard(parser)
    parser.add_argument("output", help="output folder of `daam-datasets run --classes` (local, gs:// or s3://)")
    parser.add_argument("--to", required=True, metavar="DIR", help="destination folder (local or fsspec URL)")
    parser.add_argument("--layout", choices=list(LAYOUTS), default=DEFAULT_LAYOUT,
                        help=f"folder layout (default {DEFAULT_LAYOUT})")
    fraction_argument(parser)
    parser.set_defaults(func=main, accepts_extra=False)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Export and print the summary line; an ``ExportError`` is printed by the command line as one line."""
    result = export_output(args.output, args.to, layout=args.layout, validation_fraction=args.validation_fraction)
    print(result.line())
    return 0

"""``daam-datasets run``: our options plus any Apache Beam pipeline option."""

from __future__ import annotations

import argparse
from typing import Any

from .. import argtypes
from ..beam_args import beam_options
from ..dask import options as dask_options
from ..options import DaamOptions, RunSettings



def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="generate images and token maps for a prompt corpus",
        description="Generate a DAAM dataset. Any Apache Beam option (--runner, --direct_num_workers, "
        "--project, …) may follow; the default runner is FnApiRunner. --runner dask runs on Dask "
        "(--dask-address or --dask-workers; see docs/scaling.md).",
    )
    DaamOptions._add_argparse_args(argtypes.guard(parser))
    dask_options.add_arguments(parser)
    parser.set_defaults(func=main, accepts_extra=True)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the pipeline and print its summary line (errors are printed by ``pipeline.cli``)."""
    from ..driver import run

    settings = RunSettings.from_args(args)
    options = beam_options(dask_options.beam_arguments(args, extra, settings.model.device), "run")
    summary = run(settings, options)
    print(summary.line())
    return 0

"""``daam-datasets run``: our options plus any Apache Beam pipeline option."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from ..dask import options as dask_options
from ..errors import UsageError
from ..options import DaamOptions, RunSettings

logger = logging.getLogger(__name__)
DEFAULT_RUNNER = "FnApiRunner"


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="generate images and token maps for a prompt corpus",
        description="Generate a DAAM dataset. Any Apache Beam option (--runner, --direct_num_workers, "
        "--project, …) may follow; the default runner is FnApiRunner. --runner dask runs on Dask "
        "(--dask-address or --dask-workers; see docs/scaling.md).",
    )
    DaamOptions._add_argparse_args(parser)
    dask_options.add_arguments(parser)
    parser.set_defaults(func=main, accepts_extra=True)


def unknown_beam_args(args: list[str]) -> list[str]:
    """Arguments that no Beam options class (other than ours) accepts."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__():
        if cls is not DaamOptions:
            cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    return unknown


def beam_options(extra: list[str]) -> PipelineOptions:
    """Beam options from the pass-through arguments, FnApiRunner unless a runner is given."""
    unknown = unknown_beam_args(extra)
    if unknown:
        raise UsageError(f"run: unrecognized arguments: {' '.join(unknown)}")
    if not any(a == "--runner" or a.startswith("--runner=") for a in extra):
        extra = [f"--runner={DEFAULT_RUNNER}", *extra]
    return PipelineOptions(extra)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the pipeline and print its summary line (errors are printed by ``pipeline.cli``)."""
    from ..driver import run

    settings = RunSettings.from_args(args)
    options = beam_options(dask_options.beam_arguments(args, extra, settings.model.device))
    summary = run(settings, options)
    print(summary.line())
    return 0

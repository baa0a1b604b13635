"""``daam-datasets run``: our options plus any Apache Beam pipeline option."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from transforms.model_loading import ModelLoadError
from transforms.prompts import CorpusError

from . import dask_cluster
from .cli import UsageError
from .options import DaamOptions, RunSettings
from .output import OutputError

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
    dask_cluster.add_arguments(parser)
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
    """Run the pipeline; one line on stderr for every user-facing error."""
    from .run import RunFailed, run

    try:
        settings = RunSettings.from_args(args)
        options = beam_options(dask_cluster.beam_arguments(args, extra, settings.model.device))
        summary = run(settings, options)
    except (CorpusError, ModelLoadError, OutputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a full disk while the driver writes run.json or manifests
        print(f"error: {error}; fix the cause and rerun the same command (committed shards are kept)", file=sys.stderr)
        return 1
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0

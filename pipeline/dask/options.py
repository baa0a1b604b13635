"""``--runner dask`` on the command line: our ``run`` options, the Beam option of ``DaamDaskRunner``
and their translation into Beam arguments. No Dask import at module level: the CLI imports this
module on every run, with or without the ``dask`` extra."""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ..argtypes import parse_integer, refuse
from ..errors import DaskSetupError, UsageError
from .resources import GPU

RUNNER_PATH = "pipeline.dask.runner.DaamDaskRunner"
RUNNER_ALIASES = frozenset({"dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner", RUNNER_PATH.lower()})
INSTALL_HINT = "pip install 'daam-datasets[dask]'"
MAX_WORKERS = 1024  # worker processes of a local cluster
BEAM_TARGET_FLAGS = ("--dask_client_address", "--dask_scheduler_file", "--dask_workers")


def parse_workers(value: str) -> int | str:
    """``--dask-workers``: a positive number of worker processes, or ``gpu`` (one per visible GPU)."""
    if value.strip().lower() == GPU:
        return GPU
    number = parse_integer(value)
    if number is None or not 1 <= number <= MAX_WORKERS:
        raise refuse(f"a positive integer or 'gpu' (at most {MAX_WORKERS} workers)", value)
    return number


class DaamDaskOptions(PipelineOptions):
    """Beam-level option of ``DaamDaskRunner``: start a local cluster for the run."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dask_workers",
            type=parse_workers,
            default=None,
            help="DaamDaskRunner: start a local Dask cluster of N single-threaded worker processes, "
            "or 'gpu' for one worker per visible GPU; closed when the run ends",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Our ``run`` options for Dask (Beam's own ``--dask_*`` options pass through too)."""
    group = parser.add_argument_group("Dask (--runner dask)")
    group.add_argument(
        "--dask-address",
        default=None,
        help="an existing Dask scheduler: tcp://HOST:PORT, or a scheduler file (JSON) written by "
        "'dask scheduler --scheduler-file' / dask-jobqueue",
    )
    group.add_argument(
        "--dask-workers",
        type=parse_workers,
        default=None,
        help="start a local Dask cluster for this run: N worker processes (one thread each), or "
        "'gpu' for one worker per visible GPU, each pinned to its own device",
    )


def require_dask() -> None:
    """Import Dask (and Beam's DaskRunner, which registers its ``--dask_*`` options) or explain."""
    try:
        import distributed  # noqa: F401

        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except ImportError as error:
        raise DaskSetupError(f"--runner dask needs Dask ({error.name} is not installed): {INSTALL_HINT}") from None


def address_flag(address: str) -> str:
    """Beam's flag for ``--dask-address``: a scheduler file when it names a file, else an address."""
    if os.path.isfile(address) or address.endswith(".json"):
        return f"--dask_scheduler_file={address}"
    return f"--dask_client_address={address}"


def _without_runner(extra: Sequence[str]) -> list[str]:
    """Beam's pass-through arguments less every ``--runner`` (parsed as Beam parses it: no
    abbreviations), the others unchanged and in order."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    return parser.parse_known_args(list(extra))[1]


def beam_arguments(args: argparse.Namespace, extra: Sequence[str], device: str = "auto") -> list[str]:
    """Translate ``--runner dask`` / ``--dask-address`` / ``--dask-workers`` into Beam arguments for
    ``DaamDaskRunner``; other runners' arguments are returned unchanged."""
    address, workers = getattr(args, "dask_address", None), getattr(args, "dask_workers", None)
    runner = PipelineOptions(list(extra)).view_as(StandardOptions).runner
    rest = _without_runner(extra) if runner is not None else list(extra)
    is_dask_runner = runner is not None and runner.lower() in RUNNER_ALIASES
    beam_dask_flags = [a for a in rest if a.startswith("--dask_")]
    if not (is_dask_runner or address or workers is not None or beam_dask_flags):
        return list(extra)
    if runner is not None and not is_dask_runner:
        raise UsageError(f"run: --dask-address/--dask-workers/--dask_* go with --runner dask, not --runner {runner}")
    if address and workers is not None:
        raise UsageError("run: give --dask-address (an existing scheduler) or --dask-workers (a local cluster), not both")
    given_beam_target = any(a.startswith(BEAM_TARGET_FLAGS) for a in rest)
    if not (address or workers is not None or given_beam_target):
        raise UsageError(
            "run: --runner dask needs --dask-address tcp://HOST:PORT (an existing scheduler) or "
            "--dask-workers N|gpu (a local cluster started for this run)"
        )
    if workers == GPU and device not in ("auto", "cuda", "cuda:0"):
        raise UsageError(
            f"run: --dask-workers gpu pins one GPU per worker (it is cuda:0 inside the worker); "
            f"use --device auto or cuda, not {device}"
        )
    try:
        require_dask()
    except DaskSetupError as error:
        raise UsageError(f"run: {error}") from None
    out = [f"--runner={RUNNER_PATH}", *rest]
    if address:
        out.append(address_flag(address))
    if workers is not None:
        out.append(f"--dask_workers={workers}")
    return out

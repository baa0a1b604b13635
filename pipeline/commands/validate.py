"""``daam-datasets validate OUTPUT [--repair]``: list what is wrong with an output, optionally fix it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from transforms.models.loading import ModelLoadError
from transforms.corpus import CorpusError

from ..argtypes import integer
from ..beam_args import unknown_beam_args
from ..errors import DaamDatasetsError, RunFailed, UsageError
from ..validate import Problem, repair_output, validate_output

MAX_LISTED = 50


def register(subparsers: Any) -> None:
    """Add the ``validate`` subcommand."""
    parser = subparsers.add_parser(
        "validate",
        help="check an output folder shard by shard (schema, stats, ids, maps, images, card, stray files)",
        description="Check every shard of an output folder against its stats marker, the features in "
        "run.json and the dataset card. Exit 0 when sound, 1 with a list of problems. --repair deletes "
        "damaged shards and stray files of ours (never a user's file) and regenerates those shards with the recorded settings; any "
        "Apache Beam option (--runner, …) may follow for that.",
    )
    parser.add_argument("output", help="output folder (local, gs:// or s3://)")
    parser.add_argument("--sample", type=integer(1, 10**9), default=None, metavar="N",
                        help="spot check: decode and check the rows (maps, images, checksums) of N random shards only; "
                        "every shard still gets its marker, file, row-count and id checks")
    parser.add_argument("--seed", type=integer(0, 2**31 - 1), default=0, help="with --sample: which shards (the same seed, the same shards)")
    parser.add_argument("--repair", action="store_true", help="delete damaged shards and our stray files, regenerate them")
    parser.add_argument("--prompts", default=None,
                        help="with --repair: the corpus, if not at the path recorded in run.json")
    parser.set_defaults(func=main, accepts_extra=True)


def _print(problems: list[Problem]) -> None:
    """List the first ``MAX_LISTED`` problems on stderr."""
    for problem in problems[:MAX_LISTED]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > MAX_LISTED:
        print(f"  … and {len(problems) - MAX_LISTED} more", file=sys.stderr)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Validate (and repair); 0 when the output is sound at the end, 1 otherwise, 2 on usage errors."""
    if extra and not args.repair:
        raise UsageError(f"validate: unrecognized arguments: {' '.join(extra)}")
    if args.repair and args.sample is not None:
        raise UsageError("validate: --repair checks every shard; leave out --sample")
    problems = validate_output(args.output, sample=args.sample, seed=args.seed)
    if not problems:
        print(f"{args.output}: OK")
        return 0
    print(f"{args.output}: {len(problems)} problems", file=sys.stderr)
    _print(problems)
    if not args.repair:
        return 1
    if extra:
        unknown = unknown_beam_args(extra)
        if unknown:
            raise UsageError(f"validate: unrecognized arguments: {' '.join(unknown)}")
    try:
        left = repair_output(args.output, prompts=args.prompts, beam_args=extra or None)
    except (CorpusError, ModelLoadError, DaamDatasetsError, ValueError) as error:
        raise DaamDatasetsError(f"repair failed: {error}", 1 if isinstance(error, RunFailed) else 2) from error
    if left:
        print(f"{args.output}: {len(left)} problems left after repair", file=sys.stderr)
        _print(left)
        return 1
    print(f"{args.output}: repaired, OK")
    return 0

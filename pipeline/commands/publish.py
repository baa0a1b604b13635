"""``daam-datasets publish``: arguments and ``main``."""

from __future__ import annotations

import argparse
from typing import Any

from .. import argtypes
from ..errors import UsageError
from ..logs import quiet
from ..publish import (
    CONFIGS,
    DEFAULT_CONFIG,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    SEGMENTATION_CONFIG,
    SMALL_FILES_PER_COMMIT,
    publish_to_hub,
    publish_to_path,
)
from .export import fraction_argument

MIN_COMMIT_GIB, MAX_COMMIT_GIB = 0.001, 1024.0  # 1 MiB to 1 TiB per commit
HUB_LOGGERS = ("huggingface_hub", "httpx", "httpx2", "httpcore")  # the Hub client's HTTP lines


def register(subparsers: Any) -> None:
    """Add the ``publish`` subcommand."""
    parser = subparsers.add_parser(
        "publish",
        help="validate an output and upload it to the Hugging Face Hub (or copy it with --to)",
        description="Validate OUTPUT, then upload data shards, dataset card, run summary and preview to a "
        "Hugging Face dataset repository (resumable: files already there with the same sha256 are not sent "
        "again), or copy them to any fsspec destination with --to. _stats/, _manifest/, .lock and .tmp are "
        "never published, _failures/ only with --include-failures.",
    )
    argtypes.guard(parser)
    parser.add_argument("output", help="output folder (local, gs:// or s3://)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo-id", help="Hub dataset repository ORG/NAME (created if missing)")
    where.add_argument("--to", metavar="PATH_OR_URL", help="copy to a local folder or fsspec URL instead of the Hub")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--revision", metavar="BRANCH", help="Hub branch to commit to (created from main if missing)")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (files, sizes, commits) and send nothing")
    parser.add_argument("--include-failures", action="store_true", help="also publish _failures/ (per-prompt failure records)")
    parser.add_argument("--no-preview", action="store_true", help="do not publish preview/")
    parser.add_argument("--max-files-per-commit", type=argtypes.integer(1, SMALL_FILES_PER_COMMIT), default=DEFAULT_MAX_FILES,
                        help=f"data shards per commit (default {DEFAULT_MAX_FILES}; preview files go {SMALL_FILES_PER_COMMIT} a commit)")
    parser.add_argument("--max-commit-bytes", type=argtypes.number(MIN_COMMIT_GIB, MAX_COMMIT_GIB), default=DEFAULT_MAX_BYTES / 1024**3, metavar="GIB",
                        help=f"GiB per commit (default {DEFAULT_MAX_BYTES / 1024**3:g})")
    parser.add_argument("--config", choices=CONFIGS, default=DEFAULT_CONFIG,
                        help="default: the output as it is; segmentation: its segmentation config (run --classes) as a "
                        "dataset of its own, where it is the default config (the hf export, with a validation split)")
    fraction_argument(parser, default=None)
    parser.set_defaults(func=main, accepts_extra=False)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Publish and print the result line; a ``PublishError`` (exit 2) or ``DamagedOutput`` (exit 1)
    goes up to the command line, which prints it once."""
    if args.to and (args.private or args.revision or args.token):
        raise UsageError("publish: --private, --revision and --token apply to --repo-id, not --to")
    segmentation = args.config == SEGMENTATION_CONFIG
    if not segmentation and args.validation_fraction is not None:
        raise UsageError("publish: --validation-fraction applies to --config segmentation")
    if segmentation and args.include_failures:
        raise UsageError("publish: --include-failures applies to the default config, not --config segmentation")
    if not getattr(args, "verbose", False):
        quiet(*HUB_LOGGERS)
    common: dict[str, Any] = {
        "include_failures": args.include_failures, "include_preview": not args.no_preview, "dry_run": args.dry_run,
        "max_files": args.max_files_per_commit, "max_bytes": int(args.max_commit_bytes * 1024**3),
        "config": args.config,
    }
    if args.validation_fraction is not None:
        common["validation_fraction"] = args.validation_fraction
    if args.to:
        result = publish_to_path(args.output, args.to, **common)
    else:
        result = publish_to_hub(
            args.output, args.repo_id, token=args.token, private=args.private, revision=args.revision, **common
        )
    print(result.line())
    return 0

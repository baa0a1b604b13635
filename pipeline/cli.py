"""The ``daam-datasets`` command line: one subcommand per module, errors as one clear line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

PROG = "daam-datasets"
COMMAND_MODULES = ("pipeline.run_command", "pipeline.validate_command", "pipeline.publish", "pipeline.preview")


class UsageError(Exception):
    """A bad command-line argument."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


class _DropImportNoise(logging.Filter):
    """Hide Beam's import-time note about optional Google Cloud clients."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


class _ShortLibraryErrors(logging.Filter):
    """Without -v, Beam's worker errors are logged as one line: the run's own error says what
    failed and how to resume; -v shows the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("apache_beam"):
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr; keep libraries' chatter at warning level."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropImportNoise())
        if not verbose:
            handler.addFilter(_ShortLibraryErrors())
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("apache_beam", "diffusers", "transformers", "datasets", "urllib3", "filelock", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING if not verbose else logging.INFO)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="Build DAAM attribution datasets with Apache Beam.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging("-v" in argv or "--verbose" in argv)
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if rest and not getattr(args, "accepts_extra", False):
            raise UsageError(f"{PROG} {args.command}: unrecognized arguments: {' '.join(rest)}")
        return int(args.func(args, rest) or 0)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``daam-datasets`` command line: dispatch to ``pipeline.commands``; a command error is printed
once, as one line, here."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from transforms.models.loading import ModelLoadError
from transforms.corpus import CorpusError

from .errors import DaamDatasetsError, UsageError
from .logs import setup_logging

PROG = "daam-datasets"
COMMANDS = ("run", "validate", "publish", "preview", "export", "evaluate")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of ``pipeline.commands``."""
    parser = _Parser(prog=PROG, description="Build DAAM attribution datasets with Apache Beam.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(sub)
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
    except DaamDatasetsError as error:
        return _fail(str(error), error.exit_code)
    except (CorpusError, ModelLoadError, ValueError) as error:
        return _fail(str(error), 2)
    except OSError as error:  # e.g. a full disk while the driver writes run.json or manifests
        return _fail(f"{error}; fix the cause and rerun the same command (committed shards are kept)", 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Logging set-up for the command line and for workers: our INFO lines, libraries at warning level."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("apache_beam", "diffusers", "transformers", "datasets", "urllib3", "filelock", "fsspec")


class DropImportNoise(logging.Filter):
    """Hide Beam's import-time note about optional Google Cloud clients."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


class ShortLibraryErrors(logging.Filter):
    """Without -v, Beam's worker errors are logged as one line: the run's own error says what
    failed and how to resume; -v shows the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("apache_beam"):
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr; keep libraries' chatter at warning level (info with ``verbose``)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(DropImportNoise())
        if not verbose:
            handler.addFilter(ShortLibraryErrors())
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def quiet(*names: str) -> None:
    """Set these libraries' loggers to error level (e.g. the Hub client's HTTP lines)."""
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)

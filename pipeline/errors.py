"""Errors a user sees as one line (``error: …``); each carries the exit code of its command."""

from __future__ import annotations


class DaamDatasetsError(Exception):
    """Base of every error the command line reports as one line; ``exit_code`` is what it exits with."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DaamDatasetsError):
    """A bad command-line argument."""


class OutputError(DaamDatasetsError):
    """The output folder cannot be used as asked."""


class RunFailed(DaamDatasetsError):
    """The run finished but failed (too many failed prompts, uncommitted shards, a runner error)."""

    exit_code = 1


class PublishError(DaamDatasetsError):
    """The output cannot be published as asked."""


class DamagedOutput(PublishError):
    """``validate`` found problems: the output is not published."""

    exit_code = 1


class PreviewError(DaamDatasetsError):
    """The gallery cannot be written."""


class DaskSetupError(DaamDatasetsError, ValueError):
    """A Dask cluster cannot be started or reached (missing extra, no GPU, unreachable scheduler)."""


class ExportError(DaamDatasetsError):
    """An output cannot be exported as asked (no segmentation config, a destination of a user's, …)."""

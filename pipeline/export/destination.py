"""The export's destination (``--to``): a new path, an empty folder or an earlier export of ours.

Its record, ``.daam-export.json``, lists every file export wrote there. It is written before the
first file (listing the earlier export's files and every file this one will write), so that a
crash leaves only files the record knows; at the end the files of the earlier export that this one
did not write again are deleted and the record lists exactly this export's files. A user's file is
never written over or deleted: a folder holding any is refused unless it is an earlier export, and
an export that would write where a user's file is is refused before anything is written.
Files are written to ``.tmp/`` and renamed into place on a local disk (whole objects on a store).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from transforms.shards.layout import TMP_DIR, OutputLayout

from ..errors import ExportError
from ..ownership import prune_folders, refusal, require_destination

logger = logging.getLogger(__name__)

EXPORT_RECORD = ".daam-export.json"
WRITER = "export did not write"


class ExportDestination:
    """The ``--to`` folder: checked by ``open``, claimed by ``claim``, finished by ``finish``."""

    def __init__(self, root: str) -> None:
        self.layout = OutputLayout(root)
        self.where = f"--to {self.layout.root}"
        self.previous: set[str] | None = None  # the earlier export's files (None: not an earlier export)
        self.foreign: set[str] = set()
        self.planned: set[str] = set()

    def open(self, source: OutputLayout) -> None:
        """Refuse the output itself, a file, or a folder of a user's that is not an earlier export."""
        if self.layout.fs is source.fs and self.layout.base.rstrip("/") == source.base.rstrip("/"):
            raise ExportError(f"{self.where}: is the output itself; choose a new folder")
        if self.layout.fs.exists(self.layout.base) and not self.layout.fs.isdir(self.layout.base):
            raise ExportError(f"{self.where}: is a file, not a folder")
        self.previous = self._read_record()
        self.foreign = set(require_destination(self.layout, self.previous, EXPORT_RECORD, ExportError, WRITER))

    def _read_record(self) -> set[str] | None:
        path = self.layout.path(EXPORT_RECORD)
        try:
            record = self.layout.read_json(path) if self.layout.exists(path) else None
        except (OSError, ValueError):
            record = None
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, list) or not all(isinstance(p, str) for p in files):
            if record is not None:
                logger.debug("unreadable %s: nothing there is known as written by export", path)
            return None
        return set(files)

    def claim(self, paths: Iterable[str], details: dict[str, Any]) -> None:
        """Refuse paths where a user's files are, then record them (with the earlier export's files)."""
        self.planned = set(paths)
        clash = sorted(self.planned & self.foreign)
        if clash:
            raise ExportError(refusal(self.where, clash, "move them away or choose a new folder",
                                      "holds files export did not write where it would write"))
        self._write_record(self.planned | (self.previous or set()), details, complete=False)

    def _write_record(self, files: set[str], details: dict[str, Any], complete: bool) -> None:
        record = {**details, "complete": complete, "files": sorted(files)}
        self.layout.write_json_atomic(self.layout.path(EXPORT_RECORD), record)

    @contextmanager
    def writing(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary file handle for the claimed file ``rel``, put in place when the block ends
        without an error (a temporary file and a rename on a local disk)."""
        if rel not in self.planned:
            raise ValueError(f"{rel}: not a file this export claimed")
        final = self.layout.path(rel)
        temp = final
        if self.layout.is_local:
            self.layout.makedirs(TMP_DIR)
            temp = self.layout.temp_file(final)
        else:
            self.layout.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        try:
            with self.layout.fs.open(temp, "wb") as fh:
                yield fh
        except BaseException:
            if temp != final:
                try:
                    self.layout.remove(temp)
                except OSError:
                    logger.debug("left the temporary file %s", temp)
            raise
        if temp != final:
            self.layout.commit(temp, final)

    def write(self, rel: str, data: bytes) -> None:
        """Write the claimed file ``rel``."""
        with self.writing(rel) as fh:
            fh.write(data)

    def finish(self, details: dict[str, Any]) -> int:
        """Delete the earlier export's files that this one did not write, record this export's
        files; how many files were deleted."""
        stale = sorted((self.previous or set()) - self.planned - {EXPORT_RECORD})
        for rel in stale:
            self.layout.remove(self.layout.path(rel))
        prune_folders(self.layout, stale)
        self._write_record(self.planned, details, complete=True)
        tmp = self.layout.path(TMP_DIR)
        if self.layout.is_local and self.layout.exists(tmp) and not self.layout.fs.ls(tmp):
            self.layout.fs.rmdir(tmp)
        if stale:
            logger.info("%s: removed %d files of the earlier export that this one does not have", self.where, len(stale))
        return len(stale)

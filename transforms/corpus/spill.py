"""Temporary record files that keep planning in bounded memory: append, read back in order, bucket, sort.

Records are small tuples pickled in batches to files in a private temporary folder (written and
read by this process only). Memory stays at a few thousand records per open file whatever the
corpus size.
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

BATCH = 4096
BUCKETS_HELD = 1 << 16
"""Records ``Buckets`` holds (all buckets together) before writing each bucket's share as a batch."""
SORT_RUN = 1 << 17


class RecordFile:
    """An append-only file of records, read back in the order they were appended."""

    def __init__(self, path: Path, batch: int = BATCH, written: int = 0) -> None:
        """``written``: how many records the file already holds (one another process wrote)."""
        self.path, self.batch = path, batch
        self._written = written
        self._buffer: list[Any] = []
        self._fh: BinaryIO | None = None

    @property
    def count(self) -> int:
        """How many records were appended."""
        return self._written + len(self._buffer)

    def append(self, record: Any) -> None:
        """Add one record (written with the next full batch)."""
        buffer = self._buffer
        buffer.append(record)
        if len(buffer) >= self.batch:
            self.flush()

    def extend(self, records: Iterable[Any]) -> None:
        """Add records in order."""
        for record in records:
            self.append(record)

    def write_batch(self, records: list[Any]) -> None:
        """Add these records, in order, written now as one batch."""
        self.flush()
        if records:
            self._buffer = records
            self.flush()

    def flush(self) -> None:
        """Write the buffered records."""
        if not self._buffer:
            return
        if self._fh is None:
            self._fh = self.path.open("ab")
        pickle.dump(self._buffer, self._fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._written += len(self._buffer)
        self._buffer = []

    def close(self) -> None:
        """Write what is buffered and close the file (appending reopens it)."""
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[Any]:
        self.close()
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            while True:
                try:
                    batch = pickle.load(fh)
                except EOFError:
                    return
                yield from batch


class Buckets:
    """Records partitioned by a string key's hash into ``count`` files: every record of one key
    lands in one bucket, in the order it was added."""

    def __init__(self, folder: Path, name: str, count: int = 256, held: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = [RecordFile(bucket_path(folder, name, i)) for i in range(count)]
        self._pending: list[list[Any]] = [[] for _ in range(count)]
        self._held = self._room = held or BUCKETS_HELD

    def add(self, key: str, record: Any) -> None:
        """Put ``record`` in ``key``'s bucket (written when ``held`` records wait, in all buckets together)."""
        self._pending[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(self._pending)].append(record)
        self._room -= 1
        if not self._room:
            self._write()

    def _write(self) -> None:
        for file, records in zip(self.files, self._pending):
            file.write_batch(records)
        self._pending = [[] for _ in self.files]
        self._room = self._held

    def close(self) -> None:
        """Write every waiting record and close the files (adding reopens them)."""
        self._write()
        for file in self.files:
            file.close()

    def __iter__(self) -> Iterator[RecordFile]:
        self.close()
        return (file for file in self.files if file.count)


def bucket_path(folder: Path, name: str, bucket: int) -> Path:
    """The file of bucket number ``bucket`` of the ``Buckets`` called ``name`` in ``folder``."""
    return folder / f"{name}-{bucket:04d}"


class SortedRecords:
    """Records sorted in bounded memory: runs of ``run`` records are sorted and spilled, then merged."""

    def __init__(self, folder: Path, name: str, run: int | None = None) -> None:
        self.folder, self.name, self.run = folder, name, run or SORT_RUN
        self.count = 0
        self._items: list[Any] = []
        self._runs: list[RecordFile] = []

    def add(self, record: Any) -> None:
        """Add one record."""
        self._items.append(record)
        self.count += 1
        if len(self._items) >= self.run:
            self._spill()

    def _spill(self) -> None:
        self._items.sort()
        run = RecordFile(self.folder / f"{self.name}-run-{len(self._runs):05d}")
        run.extend(self._items)
        run.close()
        self._runs.append(run)
        self._items = []

    def __iter__(self) -> Iterator[Any]:
        self._items.sort()
        return heapq.merge(*(iter(run) for run in self._runs), iter(self._items))

"""Where every row id was seen, in bounded memory: ids go to hash buckets on local disk
(``transforms.corpus.spill``), and the ids found in more than one place are read back bucket by
bucket, so validating 10 M rows never holds 10 M ids."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from transforms.corpus.spill import Buckets

BUCKETS = 64


class IdLedger:
    """``note(file, ids)`` as files are read; ``repeated()``: the files of each id seen more than once."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="daam-validate-"))
        self.files: list[str] = []
        self._buckets = Buckets(self.folder, "ids", BUCKETS)

    def note(self, rel: str, ids: Iterable[str]) -> None:
        """The file ``rel`` holds rows with these ids."""
        number = len(self.files)
        self.files.append(rel)
        for row_id in ids:
            self._buckets.add(row_id, (row_id, number))

    def repeated(self) -> Iterator[list[str]]:
        """For every id in more than one row: the files of its rows (a file twice for a repeat within it)."""
        for bucket in self._buckets:
            places: dict[str, list[int]] = {}
            for row_id, number in bucket:
                places.setdefault(row_id, []).append(number)
            for numbers in places.values():
                if len(numbers) > 1:
                    yield [self.files[n] for n in numbers]

    def close(self) -> None:
        """Remove the buckets."""
        shutil.rmtree(self.folder, ignore_errors=True)

"""Prompt ids at any corpus size: repeat suffixes, duplicate and clashing ids, in bounded memory.

A row without an id gets its content id (``content_id``: 16 hex digits), suffixed ``-2``, ``-3``…
for its second, third… occurrence in input order; a given id is kept. Ids must be unique: a given
id twice, or a given id equal to a generated one, refuses the corpus. Instead of a set of every id
in memory, each id is appended to one of ``BUCKETS`` files by the hash of its *family key* (a
generated id's content id; a given id that looks generated, ``<16 hex>`` or ``<16 hex>-<k>``, its
first 16 characters; any other given id itself), so every id that could repeat or clash with
another lands in the same bucket, in input order. Each bucket is then checked alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from .records import CorpusError
from .spill import Buckets, RecordFile, SortedRecords, bucket_path

BUCKETS = 256
_GENERATED = re.compile(r"[0-9a-f]{16}(?:-([1-9][0-9]*))?")


class Place(NamedTuple):
    """Where a row is: ``order`` (its position among all rows read), its source file and line."""

    order: int
    source: int
    line: int


class Shift(NamedTuple):
    """How the id records of one part of a corpus, read apart (``lanes``), take their places in the
    whole: ``order`` and ``index`` (prompts) added, ``sources`` mapped to the corpus' file numbers,
    ``line`` added to the lines of the part's source ``line_source`` (a file begun in an earlier part)."""

    order: int
    index: int
    sources: tuple[int, ...]
    line_source: int = -1
    line: int = 0

    def place(self, order: int, source: int, line: int) -> tuple[int, int, int]:
        """A record's ``(order, source, line)`` in the whole corpus."""
        return (order + self.order, self.sources[source] if self.sources else source,
                line + self.line if source == self.line_source else line)


NO_SHIFT = Shift(0, 0, ())
"""The records of a corpus read whole."""


Bucket = list[tuple[Iterable[tuple], Shift]]
"""One id bucket: its records in each part of the corpus, with the part's shift."""


class IdBook:
    """Collects every id of a corpus (pass 1), then checks them and says which prompts repeat."""

    def __init__(self, folder: Path, label: str) -> None:
        self.label = label
        self.sources: list[str] = []
        self._buckets = Buckets(folder, "ids", BUCKETS)
        self._repeats = SortedRecords(folder, "repeats")
        self._folder = folder
        self._parts: list[tuple[Path, Shift]] = []

    @classmethod
    def joined(cls, folder: Path, label: str, sources: list[str], parts: list[tuple[Path, Shift]]) -> "IdBook":
        """The ids of a corpus read in parts, each part's ``IdBook`` written to its folder: checked
        as one (``check``), bucket by bucket across the parts, in the parts' order."""
        book = cls(folder, label)
        book.sources, book._parts = list(sources), parts
        return book

    def close(self) -> None:
        """Write every id collected (another process checks them: ``joined``)."""
        self._buckets.close()

    def generated(self, content: str, index: int, place: Place) -> None:
        """A prompt (``index`` among the prompts) that gets the content id ``content``."""
        self._buckets.add(content, (*place, content, index))

    def given(self, row_id: str, place: Place) -> None:
        """A row (prompt or failure) that gives the id ``row_id``."""
        self._buckets.add(family_key(row_id), (*place, row_id, -1))

    def check(self) -> None:
        """``CorpusError`` for the first problem in input order: a repeated given id, or a given id
        that is also generated; records which prompts are repeats (``repeats``)."""
        problems: list[tuple[int, str]] = []
        for bucket in self._bucket_views():
            problems.extend(self._check_bucket(bucket))
        if problems:
            raise CorpusError(min(problems)[1])

    def repeats(self) -> Iterator[tuple[int, int]]:
        """``(prompt index, k)`` for every prompt whose id is its content id's ``k``-th (k ≥ 2), by index."""
        return iter(self._repeats)

    def _bucket_views(self) -> Iterator[Bucket]:
        """Each bucket, as its parts (one for a corpus read whole) with their shifts."""
        if not self._parts:
            return ([(bucket, NO_SHIFT)] for bucket in self._buckets)
        return ([(RecordFile(bucket_path(folder, "ids", i)), shift) for folder, shift in self._parts] for i in range(BUCKETS))

    def _check_bucket(self, bucket: Bucket) -> list[tuple[int, str]]:
        counts: dict[str, int] = {}
        given: dict[str, tuple[int, int, int]] = {}
        problems = []
        for records, shift in bucket:
            added = shift.index
            for order, source, line, key, index in records:
                if index >= 0:
                    count = counts[key] = counts.get(key, 0) + 1
                    if count > 1:
                        self._repeats.add((index + added, count))
                    continue
                place = shift.place(order, source, line)
                if key in given:
                    problems.append((place[0], f"{self.label}: duplicate id {key!r} on {self._lines(given[key], place)}; ids must be unique"))
                else:
                    given[key] = place
        for row_id, place in given.items():
            content, k = generated_parts(row_id)
            if content is not None and counts.get(content, 0) >= k:
                other = _kth(bucket, content, k)
                later = max(place, other)
                problems.append((later[0], f"{self.label}: id {row_id!r} is given explicitly and also generated "
                                           f"({self._at(later)}); give every row an id"))
        return problems

    def _at(self, place: tuple[int, int, int]) -> str:
        _, source, line = place
        return f"line {line}" + (f" of {self.sources[source]}" if len(self.sources) > 1 else "")

    def _lines(self, first: tuple[int, int, int], second: tuple[int, int, int]) -> str:
        if len(self.sources) <= 1 or first[1] == second[1]:
            where = f" of {self.sources[first[1]]}" if len(self.sources) > 1 else ""
            return f"lines {first[2]} and {second[2]}{where}"
        return f"{self._at(first)} and {self._at(second)}"


def family_key(row_id: str) -> str:
    """The key that puts an id in the bucket of every id it could repeat or clash with."""
    return row_id[:16] if _GENERATED.fullmatch(row_id) else row_id


def generated_parts(row_id: str) -> tuple[str | None, int]:
    """``(content id, k)`` if ``row_id`` is what the ``k``-th prompt of a content id is called
    (``abc…``: k 1; ``abc…-3``: k 3), else ``(None, 0)``."""
    match = _GENERATED.fullmatch(row_id)
    if match is None or match.group(1) == "1":
        return None, 0
    return row_id[:16], int(match.group(1) or 1)


def _kth(bucket: Bucket, content: str, k: int) -> tuple[int, int, int]:
    """The place of the ``k``-th prompt with content id ``content`` (read again: only on a clash)."""
    seen = 0
    for records, shift in bucket:
        for order, source, line, key, index in records:
            if index >= 0 and key == content:
                seen += 1
                if seen == k:
                    return shift.place(order, source, line)
    raise AssertionError("counted occurrence not found")


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
from typing import Iterator, NamedTuple

from .records import CorpusError
from .spill import Buckets, RecordFile, SortedRecords

BUCKETS = 256
_GENERATED = re.compile(r"[0-9a-f]{16}(?:-([1-9][0-9]*))?")


class Place(NamedTuple):
    """Where a row is: ``order`` (its position among all rows read), its source file and line."""

    order: int
    source: int
    line: int


class IdBook:
    """Collects every id of a corpus (pass 1), then checks them and says which prompts repeat."""

    def __init__(self, folder: Path, label: str) -> None:
        self.label = label
        self.sources: list[str] = []
        self._buckets = Buckets(folder, "ids", BUCKETS)
        self._repeats = SortedRecords(folder, "repeats")
        self._folder = folder

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
        for bucket in self._buckets:
            problems.extend(self._check_bucket(bucket))
        if problems:
            raise CorpusError(min(problems)[1])

    def repeats(self) -> Iterator[tuple[int, int]]:
        """``(prompt index, k)`` for every prompt whose id is its content id's ``k``-th (k ≥ 2), by index."""
        return iter(self._repeats)

    def _check_bucket(self, bucket: RecordFile) -> list[tuple[int, str]]:
        counts: dict[str, int] = {}
        given: dict[str, tuple[int, int, int]] = {}
        problems = []
        for order, source, line, key, index in bucket:
            if index >= 0:
                count = counts[key] = counts.get(key, 0) + 1
                if count > 1:
                    self._repeats.add((index, count))
            elif key in given:
                first = given[key]
                problems.append((order, f"{self.label}: duplicate id {key!r} on {self._lines(first, (order, source, line))}; ids must be unique"))
            else:
                given[key] = (order, source, line)
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


def _kth(bucket: RecordFile, content: str, k: int) -> tuple[int, int, int]:
    """The place of the ``k``-th prompt with content id ``content`` (read again: only on a clash)."""
    seen = 0
    for order, source, line, key, index in bucket:
        if index >= 0 and key == content:
            seen += 1
            if seen == k:
                return order, source, line
    raise AssertionError("counted occurrence not found")


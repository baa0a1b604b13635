"""CSV records in bounded memory, each one ``Row``: the records after the header, numbered by the
line they start on.

Quoted fields may hold line breaks, so a record may span lines — but at most ``MAX_RECORD_LINES``
lines and ``MAX_LINE_BYTES`` bytes. A quote that is never closed (or not within those limits) makes
only its record's first line a failure; the lines after it are read again as records of their own,
so one stray quote cannot swallow the rest of the file. Every record must have as many fields as the
header; a record whose fields are all empty or whitespace (``,,,``, an empty line) is blank.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from typing import Iterable, Iterator

from .lines import ANY_BREAK, Line, split_lines
from .records import MAX_LINE_BYTES, ColumnNames, CorpusError, Row, check_columns

MAX_RECORD_LINES = 100


class _RecordTooLong(Exception):
    """Raised into ``csv.reader`` to end a record that runs past the limits."""


class _Feed:
    """Feeds ``csv.reader`` one line at a time, keeps the current record's lines (to read them again
    when the record turns out broken) and notes what was wrong with them.

    A line too long to hold is fed as its quoting only (an odd count of ``"`` leaves a quoted field
    open), so the records after it are split where they would have been."""

    def __init__(self, lines: Iterator[Line]) -> None:
        self.lines = lines
        self.again: deque[Line] = deque()
        self.record: list[Line] = []
        self.size = 0
        self.last = 0
        self.ended = False
        self.problem = ""

    def start_record(self) -> None:
        """The next line fed begins a new record."""
        self.record, self.size, self.problem = [], 0, ""

    @property
    def first(self) -> int:
        """The line the current record starts on."""
        return self.record[0].number if self.record else self.last + 1

    def read_again(self) -> None:
        """Drop the current record's first line; feed the lines after it again."""
        if self.record:
            self.again.extendleft(reversed(self.record[1:]))
            self.last = self.record[0].number

    def open_quote(self) -> bool:
        """Whether the record spans lines and its quotes do not pair up (a quote left open)."""
        quotes = sum(line.quotes if line.data is None else line.data.count(b'"') for line in self.record)
        return len(self.record) > 1 and quotes % 2 == 1

    def __iter__(self) -> "_Feed":
        return self

    def __next__(self) -> str:
        if self.again:
            line = self.again.popleft()
        else:
            try:
                line = next(self.lines)
            except StopIteration:
                self.ended = True
                raise
        self.last = line.number
        self.record.append(line)
        self.size += len(line.data or b"") + len(line.end)
        if len(self.record) > 1 and (self.size > MAX_LINE_BYTES or len(self.record) > MAX_RECORD_LINES):
            raise _RecordTooLong
        text, error = line.decode()
        if text is not None:
            return text + line.end.decode()
        if not self.problem:
            self.problem = error if len(self.record) == 1 else f"{error} (line {line.number})"
        if line.data is None:
            return '"' * (line.quotes % 2) + line.end.decode()
        return line.data.decode("utf-8", "replace") + line.end.decode()


def csv_rows(chunks: Iterable[bytes], label: str, columns: ColumnNames) -> Iterator[Row]:
    """The records of a CSV file (comma-separated, ``"``-quoted, as spreadsheets write it)."""
    feed = _Feed(split_lines(chunks, ANY_BREAK))
    reader = csv.reader(feed)
    used = set(columns.used())
    header: list[str] | None = None
    while True:
        feed.start_record()
        try:
            fields: list[str] | None = next(reader)
            broken = "" if not (feed.ended and feed.open_quote()) else f"a quote opened on line {feed.first} is never closed"
        except StopIteration:
            return
        except _RecordTooLong:
            fields, broken = None, (
                f"a quote opened on line {feed.first} is not closed within {MAX_RECORD_LINES} lines or {MAX_LINE_BYTES} bytes"
            )
        except csv.Error as error:
            fields, broken = None, f"unreadable CSV ({error})"
        first = feed.first
        if broken:
            fields, feed.problem = None, broken
            feed.read_again()
        if header is None and (fields is None or feed.problem):
            raise CorpusError(f"--prompts {label}: line {first}: unreadable CSV header ({feed.problem})")
        if fields is None or feed.problem:
            yield Row(first, error=feed.problem)
        elif not any(f.strip() for f in fields):
            yield Row(first, blank=True)
        elif header is None:
            check_columns(fields, columns, label)
            header = fields
        elif len(fields) != len(header):
            raw = json.dumps(fields, ensure_ascii=False)
            yield Row(first, error=f"row has {len(fields)} fields, the header has {len(header)}", raw=raw)
        else:
            yield Row(first, {name: value for name, value in zip(header, fields) if name in used})

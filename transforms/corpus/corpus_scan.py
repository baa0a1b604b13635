"""A corpus read into a ``CorpusScan`` (counts and failures in memory, prompts on disk) by a ``RowReader``.

The reader validates each row and appends each prompt to a spill file and each id to the id
buckets (``ids``); ``CorpusScan.records`` reads the spill back in input order with each prompt's
final id and seed. ``scan`` drives it over a whole corpus, ``lanes`` over parts of one at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from .identity import content_id, derive_seed
from .ids import IdBook, Place
from .records import RAW_EXCERPT_CHARS, ColumnNames, CorpusError, PromptRecord, ReadFailure, Row, too_many_rows
from .spill import RecordFile
from .validation import RowError, check_row, parse_id, plain_prompt
from . import records as limits

logger = logging.getLogger(__name__)
LOGGED_FAILURES = 20


@dataclass
class CorpusScan:
    """A corpus read once: how many prompts, the rows that failed, the blank rows skipped.

    Every row read is exactly one of these: ``rows_read == num_prompts + len(failures) + blank``;
    ``stopped_at_limit`` says reading stopped at ``--limit`` with rows left unread. ``records()``
    streams the prompts in input order; ``close()`` removes the spill."""

    folder: Path
    run_seed: int
    num_prompts: int = 0
    failures: list[ReadFailure] = field(default_factory=list)
    blank: int = 0
    rows_read: int = 0
    stopped_at_limit: bool = False
    ids: IdBook | None = None
    spills: list[RecordFile] = field(default_factory=list)
    """The prompts' spill files, in input order (one, or one a lane: ``lanes``)."""

    @property
    def accounted(self) -> bool:
        """Whether the counts add up to the rows read."""
        return self.rows_read == self.num_prompts + len(self.failures) + self.blank

    def part_starts(self) -> list[int]:
        """The index of the first prompt of each spill file."""
        return list(itertools.accumulate((spill.count for spill in self.spills[:-1]), initial=0))

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[PromptRecord]:
        """The prompts ``start`` to ``stop`` (default: all) in input order, with their final ids
        (repeat suffixes) and seeds."""
        repeats = (repeat for repeat in self.ids.repeats() if repeat[0] >= start)
        next_repeat = next(repeats, None)
        for index, (key, given, prompt, seed, negative) in enumerate(self._spilled(start, stop), start):
            prompt_id = key
            if not given and next_repeat is not None and next_repeat[0] == index:
                prompt_id = f"{key}-{next_repeat[1]}"
                next_repeat = next(repeats, None)
            if seed is None:
                seed = derive_seed(self.run_seed, prompt_id)
            yield PromptRecord(index, prompt_id, prompt, seed, negative)

    def _spilled(self, start: int, stop: int | None) -> Iterator[tuple]:
        stop = self.num_prompts if stop is None else stop
        for offset, spill in zip(self.part_starts(), self.spills):
            if offset < stop and offset + spill.count > start:
                yield from itertools.islice(spill, max(start - offset, 0), min(stop - offset, spill.count))

    def close(self) -> None:
        """Remove the spill folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "CorpusScan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TooManyFailures(CorpusError):
    """More than ``MAX_READ_FAILURES`` unreadable rows."""


def too_many_failures(label: str, first: ReadFailure) -> TooManyFailures:
    """The error for a corpus with too many unreadable rows, naming the first."""
    return TooManyFailures(
        f"--prompts {label}: more than {limits.MAX_READ_FAILURES:,} unreadable rows (the first, line "
        f"{first.line}: {first.reason}); is this the right file, format and --prompt-column?"
    )


class RowReader:
    """Turns rows into a scan: validation, content ids, failure records."""

    def __init__(self, label: str, columns: ColumnNames, scan: CorpusScan) -> None:
        self.label, self.columns, self.scan = label, columns, scan
        self.sources: dict[str, int] = {}

    def read(self, rows: Iterator[Row], limit: int | None, log: bool = True) -> None:
        """Every row (up to ``limit`` prompts) into the scan; what was skipped and failed logged."""
        scan = self.scan
        with closing(rows):
            for row in rows:
                if limit is not None and scan.num_prompts >= limit:
                    scan.stopped_at_limit = True
                    break
                if scan.rows_read >= limits.MAX_ROWS:
                    raise CorpusError(too_many_rows(self.label, limits.MAX_ROWS))
                scan.rows_read += 1
                self.add(row)
        scan.spills[-1].close()
        if log:
            log_scan(self.label, scan)

    def _place(self, row: Row) -> Place:
        source = self.sources.get(row.file)
        if source is None:
            source = self.sources[row.file] = len(self.sources)
            self.scan.ids.sources.append(row.file or self.label)
        return Place(self.scan.rows_read, source, row.line)

    def add(self, row: Row) -> None:
        """Account for one row: a prompt, a failure or a blank."""
        text = row.text
        if text is not None and plain_prompt(text):  # a .txt line that needs no further check
            self._keep(row, text, None, None, "")
            return
        values = {self.columns.prompt: text} if text is not None else row.values
        if row.blank:
            self.scan.blank += 1
            return
        if row.error or values is None:
            self._fail(row, row.error, _id_if_valid(values, self.columns.id))
            return
        try:
            fields = check_row(values, self.columns)
        except RowError as error:
            self._fail(row, str(error), error.row_id)
            return
        if fields is None:
            self.scan.blank += 1
            return
        self._keep(row, *fields)

    def _keep(self, row: Row, prompt: str, given_id: str | None, seed: int | None, negative: str) -> None:
        """A usable prompt: its id into the id book, the prompt into the spill."""
        scan = self.scan
        if given_id is not None:
            scan.ids.given(given_id, self._place(row))
            key = given_id
        else:
            key = content_id(prompt, seed)
            scan.ids.generated(key, scan.num_prompts, self._place(row))
        scan.spills[-1].append((key, given_id is not None, prompt, seed, negative))
        scan.num_prompts += 1

    def _fail(self, row: Row, reason: str, row_id: str | None) -> None:
        failures = self.scan.failures
        if row_id is not None:
            self.scan.ids.given(row_id, self._place(row))
        if len(failures) >= limits.MAX_READ_FAILURES:
            raise too_many_failures(self.label, failures[0])
        failures.append(ReadFailure(row.file or self.label, row.line, reason or "unreadable row", _excerpt(row), row_id))


def log_scan(label: str, scan: CorpusScan) -> None:
    """Log what was skipped and what failed."""
    if scan.blank:
        logger.info("skipped %d blank prompt rows in %s", scan.blank, label)
    for failure in scan.failures[:LOGGED_FAILURES]:
        logger.error("%s: line %d: %s", failure.source, failure.line, failure.reason)
    if len(scan.failures) > LOGGED_FAILURES:
        logger.error("%s: %d more unreadable rows (each has a failure record)", label, len(scan.failures) - LOGGED_FAILURES)
    logger.info(
        "%s: %d rows read = %d prompts + %d unreadable + %d blank%s", label, scan.rows_read,
        scan.num_prompts, len(scan.failures), scan.blank, " (stopped at --limit)" if scan.stopped_at_limit else "",
    )


def _id_if_valid(values: Mapping[str, Any] | None, column: str) -> str | None:
    """The id a partly read row gave, if it is a valid one."""
    if values is None:
        return None
    try:
        return parse_id(values.get(column))
    except RowError:
        return None


def _excerpt(row: Row) -> str:
    """The start of a failed row's text, storable as UTF-8 (lone surrogates escaped)."""
    text = row.raw or (json.dumps(dict(row.values), ensure_ascii=False, default=str) if row.values else "")
    text = text[:RAW_EXCERPT_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text

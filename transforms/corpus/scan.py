"""One streaming pass over a corpus into a ``CorpusScan``: counts and failures in memory, prompts on disk.

Pass 1 (``scan_corpus``) reads every row once, validates it and appends each prompt to a spill
file and each id to the id buckets (``ids``); the buckets are then checked (duplicate or clashing
ids refuse the corpus before any work). Pass 2 (``CorpusScan.records``) reads the spill back in
input order with each prompt's final id and seed. Memory stays bounded whatever the corpus size;
the spill takes about the corpus' own size on local disk (``TMPDIR``, or ``workdir``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from .identity import content_id, derive_seed
from .ids import IdBook, Place
from .readers import open_rows
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
    spill: RecordFile | None = None

    @property
    def accounted(self) -> bool:
        """Whether the counts add up to the rows read."""
        return self.rows_read == self.num_prompts + len(self.failures) + self.blank

    def records(self) -> Iterator[PromptRecord]:
        """The prompts in input order, with their final ids (repeat suffixes) and seeds."""
        repeats = self.ids.repeats()
        next_repeat = next(repeats, None)
        for index, (key, given, prompt, seed, negative) in enumerate(self.spill):
            prompt_id = key
            if not given and next_repeat is not None and next_repeat[0] == index:
                prompt_id = f"{key}-{next_repeat[1]}"
                next_repeat = next(repeats, None)
            if seed is None:
                seed = derive_seed(self.run_seed, prompt_id)
            yield PromptRecord(index, prompt_id, prompt, seed, negative)

    def close(self) -> None:
        """Remove the spill folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "CorpusScan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def scan_corpus(
    source: str,
    run_seed: int = 0,
    columns: ColumnNames | None = None,
    limit: int | None = None,
    split: str = "train",
    workdir: str | None = None,
) -> CorpusScan:
    """Read, validate and identify every row of ``source`` in one pass (see the module docstring).

    ``CorpusError`` for duplicate or clashing ids, more than ``MAX_ROWS`` rows or
    ``MAX_READ_FAILURES`` unreadable ones; ``limit`` stops after that many prompts."""
    columns = columns or ColumnNames()
    folder = Path(tempfile.mkdtemp(prefix="daam-corpus-", dir=workdir))
    scan = CorpusScan(folder, run_seed, ids=IdBook(folder, source), spill=RecordFile(folder / "prompts"))
    try:
        _Reader(source, columns, scan).read(open_rows(source, columns, split, limits.MAX_ROWS if limit is None else None), limit)
        scan.ids.check()
    except BaseException:
        scan.close()
        raise
    return scan


class _Reader:
    """Turns rows into the scan: validation, content ids, failure records."""

    def __init__(self, label: str, columns: ColumnNames, scan: CorpusScan) -> None:
        self.label, self.columns, self.scan = label, columns, scan
        self.sources: dict[str, int] = {}

    def read(self, rows: Iterator[Row], limit: int | None) -> None:
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
        scan.spill.close()
        self._log()

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
        scan.spill.append((key, given_id is not None, prompt, seed, negative))
        scan.num_prompts += 1

    def _fail(self, row: Row, reason: str, row_id: str | None) -> None:
        failures = self.scan.failures
        if row_id is not None:
            self.scan.ids.given(row_id, self._place(row))
        if len(failures) >= limits.MAX_READ_FAILURES:
            first = failures[0]
            raise CorpusError(
                f"--prompts {self.label}: more than {limits.MAX_READ_FAILURES:,} unreadable rows (the first, line "
                f"{first.line}: {first.reason}); is this the right file, format and --prompt-column?"
            )
        failures.append(ReadFailure(row.file or self.label, row.line, reason or "unreadable row", _excerpt(row), row_id))

    def _log(self) -> None:
        """Log what was skipped and what failed."""
        scan = self.scan
        if scan.blank:
            logger.info("skipped %d blank prompt rows in %s", scan.blank, self.label)
        for failure in scan.failures[:LOGGED_FAILURES]:
            logger.error("%s: line %d: %s", failure.source, failure.line, failure.reason)
        if len(scan.failures) > LOGGED_FAILURES:
            logger.error("%s: %d more unreadable rows (each has a failure record)", self.label, len(scan.failures) - LOGGED_FAILURES)
        logger.info(
            "%s: %d rows read = %d prompts + %d unreadable + %d blank%s", self.label, scan.rows_read,
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

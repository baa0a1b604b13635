"""Read prompt corpora into validated ``PromptRecord``s with stable ids and seeds.

Formats: ``.txt`` (one prompt a line), ``.jsonl``, ``.csv``, ``.parquet``, a local Hugging Face
dataset folder (``save_to_disk`` or a data repo) and ``hf:NAME`` (``readers``). Every row read ends as
exactly one of: a prompt, a ``ReadFailure`` (source, line or row number, the row's id if it gave
one, reason), or a counted blank row (``validation`` says which); reading goes on past bad rows.
Memory stays bounded by ``records``' limits whatever the input: lines, cells, rows and failures.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import closing
from typing import Any, Mapping

from ..attribution.generate import SEED_MODULUS
from .readers import SUPPORTED_FORMATS, open_rows
from .records import (
    MAX_CELL_BYTES,
    MAX_LINE_BYTES,
    MAX_READ_FAILURES,
    MAX_ROWS,
    RAW_EXCERPT_CHARS,
    ColumnNames,
    Corpus,
    CorpusError,
    PromptRecord,
    ReadFailure,
    Row,
    too_many_rows,
)
from .validation import RowError, check_row, parse_id

__all__ = [
    "MAX_CELL_BYTES", "MAX_LINE_BYTES", "MAX_READ_FAILURES", "MAX_ROWS", "SUPPORTED_FORMATS",
    "ColumnNames", "Corpus", "CorpusError", "PromptRecord", "ReadFailure",
    "content_id", "derive_seed", "read_corpus",
]

logger = logging.getLogger(__name__)
LOGGED_FAILURES = 20


def derive_seed(run_seed: int, prompt_id: str) -> int:
    """Seed of a prompt without one: a hash of (run seed, id), stable across runs and runners."""
    digest = hashlib.blake2b(f"{run_seed}\x00{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def content_id(prompt: str, seed: int | None) -> str:
    """Id of a prompt without one: 16 hex digits of a hash of (prompt, given seed)."""
    text = f"{prompt}\x00{'' if seed is None else seed}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def read_corpus(
    source: str,
    run_seed: int = 0,
    columns: ColumnNames | None = None,
    limit: int | None = None,
    split: str = "train",
) -> Corpus:
    """Read, validate and identify every row of ``source``.

    Ids: the corpus' own id column when a row gives one; otherwise a hash of (prompt, seed), suffixed
    ``-2``, ``-3``… for repeats. Duplicate given ids raise ``CorpusError`` before any work, as does a
    corpus of more than ``MAX_ROWS`` rows or ``MAX_READ_FAILURES`` unreadable ones. ``limit`` stops
    reading after that many prompts (``Corpus.stopped_at_limit`` says if rows were left).
    """
    columns = columns or ColumnNames()
    builder = _CorpusBuilder(source, run_seed, columns)
    corpus = builder.corpus
    with closing(open_rows(source, columns, split, MAX_ROWS if limit is None else None)) as rows:
        for row in rows:
            if limit is not None and len(corpus.prompts) >= limit:
                corpus.stopped_at_limit = True
                break
            if corpus.rows_read >= MAX_ROWS:
                raise CorpusError(too_many_rows(source, MAX_ROWS))
            corpus.rows_read += 1
            builder.add(row)
    builder.finish()
    return corpus


class _CorpusBuilder:
    """Turns rows into the corpus: validation, ids (given, generated, repeated), failure records."""

    def __init__(self, label: str, run_seed: int, columns: ColumnNames) -> None:
        self.label, self.run_seed, self.columns = label, run_seed, columns
        self.corpus = Corpus()
        self.repeats: dict[str, int] = {}  # content id -> prompts that had it (id, id-2, id-3…)
        self.given: dict[str, int] = {}  # given id -> its line

    def add(self, row: Row) -> None:
        """Account for one row: a prompt, a failure or a blank."""
        if row.blank:
            self.corpus.blank += 1
            return
        if row.error or row.values is None:
            self._fail(row, row.error, _id_if_valid(row.values, self.columns.id))
            return
        try:
            fields = check_row(row.values, self.columns)
        except RowError as error:
            self._fail(row, str(error), error.row_id)
            return
        if fields is None:
            self.corpus.blank += 1
            return
        if fields.id is not None:
            self._claim(fields.id, row.line)
            prompt_id = fields.id
        else:
            base = content_id(fields.prompt, fields.seed)
            count = self.repeats[base] = self.repeats.get(base, 0) + 1
            prompt_id = base if count == 1 else f"{base}-{count}"
            if prompt_id in self.given:
                self._clash(prompt_id, row.line)
        seed = fields.seed if fields.seed is not None else derive_seed(self.run_seed, prompt_id)
        prompts = self.corpus.prompts
        prompts.append(PromptRecord(len(prompts), prompt_id, fields.prompt, seed, fields.negative_prompt))

    def _claim(self, row_id: str, line: int) -> None:
        if row_id in self.given:
            raise CorpusError(
                f"{self.label}: duplicate id {row_id!r} on lines {self.given[row_id]} and {line}; ids must be unique"
            )
        base, _, repeat = row_id.partition("-")
        count = self.repeats.get(base, 0)
        if count and (not repeat or (repeat.isdigit() and 2 <= int(repeat) <= count)):
            self._clash(row_id, line)
        self.given[row_id] = line

    def _clash(self, row_id: str, line: int) -> None:
        raise CorpusError(
            f"{self.label}: id {row_id!r} is given explicitly and also generated (line {line}); give every row an id"
        )

    def _fail(self, row: Row, reason: str, row_id: str | None) -> None:
        if row_id is not None:
            self._claim(row_id, row.line)
        failures = self.corpus.failures
        if len(failures) >= MAX_READ_FAILURES:
            first = failures[0]
            raise CorpusError(
                f"--prompts {self.label}: more than {MAX_READ_FAILURES:,} unreadable rows (the first, line "
                f"{first.line}: {first.reason}); is this the right file, format and --prompt-column?"
            )
        failures.append(ReadFailure(self.label, row.line, reason or "unreadable row", _excerpt(row), row_id))

    def finish(self) -> None:
        """Log what was skipped and what failed."""
        corpus = self.corpus
        if corpus.blank:
            logger.info("skipped %d blank prompt rows in %s", corpus.blank, self.label)
        for failure in corpus.failures[:LOGGED_FAILURES]:
            logger.error("%s: line %d: %s", failure.source, failure.line, failure.reason)
        if len(corpus.failures) > LOGGED_FAILURES:
            logger.error("%s: %d more unreadable rows (each has a failure record)", self.label, len(corpus.failures) - LOGGED_FAILURES)
        logger.info(
            "%s: %d rows read = %d prompts + %d unreadable + %d blank%s", self.label, corpus.rows_read,
            len(corpus.prompts), len(corpus.failures), corpus.blank, " (stopped at --limit)" if corpus.stopped_at_limit else "",
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

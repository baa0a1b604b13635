"""Read prompt corpora into validated ``PromptRecord``s with stable ids and seeds.

Formats: ``.txt`` (one prompt a line), ``.jsonl``, ``.csv`` (each optionally gzip-compressed,
``.jsonl.gz``), ``.parquet``, a glob of such files, a local Hugging Face dataset folder
(``save_to_disk`` or a data repo) and ``hf:NAME`` (streamed) (``readers``). Every row read ends as
exactly one of: a prompt, a ``ReadFailure`` (source, line or row number, the row's id if it gave
one, reason), or a counted blank row (``validation`` says which); reading goes on past bad rows.
``scan_corpus`` reads in one streaming pass with bounded memory at any size (``scan``);
``read_corpus`` is the same, collected into a list (small corpora, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .identity import content_id, derive_seed
from .readers import SUPPORTED_FORMATS
from .records import (
    MAX_CELL_BYTES,
    MAX_LINE_BYTES,
    MAX_READ_FAILURES,
    MAX_ROWS,
    ColumnNames,
    CorpusError,
    PromptRecord,
    ReadFailure,
)
from .corpus_scan import CorpusScan
from .scan import scan_corpus

__all__ = [
    "MAX_CELL_BYTES", "MAX_LINE_BYTES", "MAX_READ_FAILURES", "MAX_ROWS", "SUPPORTED_FORMATS",
    "ColumnNames", "Corpus", "CorpusError", "CorpusScan", "PromptRecord", "ReadFailure",
    "content_id", "derive_seed", "read_corpus", "scan_corpus",
]


@dataclass
class Corpus:
    """A corpus in memory: its prompts, the rows that failed and the blank rows skipped
    (``CorpusScan``'s counts, with the prompts as a list)."""

    prompts: list[PromptRecord] = field(default_factory=list)
    failures: list[ReadFailure] = field(default_factory=list)
    blank: int = 0
    rows_read: int = 0
    stopped_at_limit: bool = False

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def accounted(self) -> bool:
        """Whether the counts add up to the rows read."""
        return self.rows_read == len(self.prompts) + len(self.failures) + self.blank


def read_corpus(
    source: str,
    run_seed: int = 0,
    columns: ColumnNames | None = None,
    limit: int | None = None,
    split: str = "train",
) -> Corpus:
    """Read, validate and identify every row of ``source`` (``scan_corpus``), prompts in a list.

    Ids: the corpus' own id column when a row gives one; otherwise a hash of (prompt, seed), suffixed
    ``-2``, ``-3``… for repeats. Duplicate given ids raise ``CorpusError`` before any work, as does a
    corpus of more than ``MAX_ROWS`` rows or ``MAX_READ_FAILURES`` unreadable ones. ``limit`` stops
    reading after that many prompts (``Corpus.stopped_at_limit`` says if rows were left).
    """
    with scan_corpus(source, run_seed, columns, limit, split) as scan:
        return Corpus(list(scan.records()), scan.failures, scan.blank, scan.rows_read, scan.stopped_at_limit)

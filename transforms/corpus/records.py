"""What reading a corpus produces: prompts, failed rows, counts, and the limits every reader keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

MAX_LINE_BYTES = 65536
"""A longer line of a .txt, .jsonl or .csv file is a failure record; it is skipped, never held."""
MAX_CELL_BYTES = 65536
"""A longer prompt, id or negative prompt (UTF-8 bytes) is a failure record (Parquet, HF datasets too)."""
MAX_ROWS = 10_000_000_000
"""A corpus with more input rows is refused (``CorpusError``): split it, or read part with ``--limit``.
Planning holds no prompt in memory (``scan``), so this is a sanity limit, not a memory one."""
MAX_READ_FAILURES = 100_000
"""A corpus with more unreadable rows is refused: it is almost surely the wrong format or column."""
RAW_EXCERPT_CHARS = 500
"""How much of a failed row's text its failure record keeps."""


class CorpusError(ValueError):
    """The corpus as a whole cannot be used (missing file, unknown format, duplicate ids, too large)."""


@dataclass(frozen=True)
class ColumnNames:
    """Which columns hold the prompt, id, seed and negative prompt in tabular corpora."""

    prompt: str = "prompt"
    id: str = "id"
    seed: str = "seed"
    negative_prompt: str = "negative_prompt"

    def used(self) -> tuple[str, ...]:
        """The columns a reader needs, prompt first, each once."""
        return tuple(dict.fromkeys((self.prompt, self.id, self.seed, self.negative_prompt)))


class PromptRecord(NamedTuple):
    """A prompt ready for generation; ``index`` is its position among the valid prompts."""

    index: int
    id: str
    prompt: str
    seed: int
    negative_prompt: str = ""


@dataclass(frozen=True)
class ReadFailure:
    """A corpus row that could not become a prompt: where (``line`` is the 1-based line of a text
    file, or row number of Parquet and HF datasets), the row's id if it gave a valid one, and why."""

    source: str
    line: int
    reason: str
    raw: str = ""
    id: str | None = None


class Row(NamedTuple):
    """One input row as a reader yields it: its line (or row number), its values by column, or why
    it cannot be read.

    ``values`` may accompany an ``error`` (what could be read, e.g. the id); ``blank`` marks a row
    with no content at all; ``raw`` is the row's text where the format has one."""

    line: int
    values: Mapping[str, Any] | None = None
    error: str = ""
    raw: str = ""
    blank: bool = False
    file: str = ""
    """The file the row is in when the corpus is a glob of several (else ``""``: the corpus itself)."""
    text: str | None = None
    """A .txt line: the whole line is the prompt, as written (``values`` is then ``None``)."""


def check_columns(names: list[str], columns: ColumnNames, label: str) -> None:
    """Refuse a table (CSV header, Parquet or dataset columns) without the prompt column, or naming
    a used column twice."""
    if columns.prompt not in names:
        shown = ", ".join(repr(n) for n in names[:20]) + (" …" if len(names) > 20 else "")
        raise CorpusError(
            f"--prompts {label}: no usable prompts: missing column {columns.prompt!r} (columns: {shown}); "
            f"name the prompt column with --prompt-column"
        )
    twice = [name for name in columns.used() if names.count(name) > 1]
    if twice:
        raise CorpusError(f"--prompts {label}: column {twice[0]!r} appears more than once")


def too_many_rows(label: str, max_rows: int = MAX_ROWS) -> str:
    """The message refusing a corpus of more than ``max_rows`` rows."""
    return f"--prompts {label}: more than {max_rows:,} rows; split the corpus into parts, or read part of it with --limit"

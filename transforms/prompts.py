"""Read prompt corpora into validated ``PromptRecord``s with stable ids and seeds.

Formats: ``.txt`` (one prompt a line), ``.jsonl``, ``.csv``, ``.parquet``, a local Hugging Face
dataset folder (``save_to_disk`` or a data repo) and ``hf:NAME``. A row that cannot be used becomes
a ``ReadFailure`` (file, line, reason) and reading goes on; blank prompts are skipped and counted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .attribution.generate import SEED_MODULUS

logger = logging.getLogger(__name__)


class CorpusError(ValueError):
    """The corpus as a whole cannot be used (missing file, unknown format, duplicate ids)."""


@dataclass(frozen=True)
class ColumnNames:
    """Which columns hold the prompt, id, seed and negative prompt in tabular corpora."""

    prompt: str = "prompt"
    id: str = "id"
    seed: str = "seed"
    negative_prompt: str = "negative_prompt"


@dataclass(frozen=True)
class PromptRecord:
    """A prompt ready for generation; ``index`` is its position among the valid prompts."""

    index: int
    id: str
    prompt: str
    seed: int
    negative_prompt: str = ""


@dataclass(frozen=True)
class ReadFailure:
    """A corpus row that could not become a prompt."""

    source: str
    line: int
    reason: str
    raw: str = ""


@dataclass
class Corpus:
    """The prompts of a corpus, the rows that failed and the blank rows skipped."""

    prompts: list[PromptRecord] = field(default_factory=list)
    failures: list[ReadFailure] = field(default_factory=list)
    blank: int = 0


def derive_seed(run_seed: int, prompt_id: str) -> int:
    """Seed of a prompt without one: a hash of (run seed, id), stable across runs and runners."""
    digest = hashlib.blake2b(f"{run_seed}\x00{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def content_id(prompt: str, seed: int | None) -> str:
    """Id of a prompt without one: 16 hex digits of a hash of (prompt, given seed)."""
    text = f"{prompt}\x00{'' if seed is None else seed}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _parse_seed(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"seed must be an integer, got {value!r}")
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer, got {value!r}") from None
    if not 0 <= seed < SEED_MODULUS:
        raise ValueError(f"seed {seed} is outside [0, 2**63)")
    return seed


def _iter_text_lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """Yield (line number, text or None if undecodable, error) for each line of a file."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as error:
                yield number, None, f"invalid UTF-8 at byte {error.start}"


def _txt_rows(path: Path, columns: ColumnNames) -> Iterator[tuple[int, dict | None, str]]:
    for number, text, error in _iter_text_lines(path):
        yield number, (None if text is None else {columns.prompt: text}), error


def _jsonl_rows(path: Path, columns: ColumnNames) -> Iterator[tuple[int, dict | None, str]]:
    for number, text, error in _iter_text_lines(path):
        if text is None:
            yield number, None, error
            continue
        if not text.strip():
            yield number, {columns.prompt: ""}, ""
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg} at column {exc.colno}"
            continue
        if not isinstance(row, dict):
            yield number, None, f"expected a JSON object, got {type(row).__name__}"
            continue
        yield number, row, ""


def _csv_rows(path: Path, columns: ColumnNames) -> Iterator[tuple[int, dict | None, str]]:
    with path.open(newline="", encoding="utf-8", errors="strict") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                yield reader.line_num, row, ""
        except (UnicodeDecodeError, csv.Error) as error:
            raise CorpusError(f"{path}: line {reader.line_num + 1}: unreadable CSV ({error})") from None


def _table_rows(table: Any, source: str) -> Iterator[tuple[int, dict | None, str]]:
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row, ""


def _parquet_rows(path: Path, columns: ColumnNames) -> Iterator[tuple[int, dict | None, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for damaged files
        raise CorpusError(f"{path}: not a readable Parquet file ({error})") from None
    yield from _table_rows(table, str(path))


def _hf_rows(source: str, split: str) -> Iterator[tuple[int, dict | None, str]]:
    import datasets

    try:
        if source.startswith("hf:"):
            dataset = datasets.load_dataset(source[3:], split=split)
        elif (Path(source) / "dataset_info.json").exists() or (Path(source) / "state.json").exists():
            dataset = datasets.load_from_disk(source)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(source, split=split)
    except Exception as error:  # datasets raises many types; the message is what matters
        raise CorpusError(f"{source}: cannot load as a Hugging Face dataset ({error})") from None
    yield from _table_rows(dataset.data.table, source)


_READERS = {".txt": _txt_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
SUPPORTED_FORMATS = ".txt, .jsonl, .csv, .parquet, a Hugging Face dataset folder or hf:NAME"


def _rows(source: str, columns: ColumnNames, split: str) -> Iterator[tuple[int, dict | None, str]]:
    if source.startswith("hf:"):
        return _hf_rows(source, split)
    path = Path(source).expanduser()
    if path.is_dir():
        return _hf_rows(str(path), split)
    if not path.exists():
        raise CorpusError(f"--prompts {source}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise CorpusError(f"--prompts {source}: unknown format {path.suffix!r}; use {SUPPORTED_FORMATS}")
    return reader(path, columns)


def _to_record(row: dict, columns: ColumnNames) -> tuple[str, str | None, int | None, str]:
    if columns.prompt not in row:
        raise ValueError(f"missing column {columns.prompt!r} (columns: {', '.join(map(str, row))})")
    prompt = row[columns.prompt]
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__} {prompt!r}")
    if "\x00" in prompt:
        raise ValueError("prompt contains a NUL character")
    raw_id = row.get(columns.id)
    given_id = None if raw_id is None or raw_id == "" else str(raw_id)
    negative = row.get(columns.negative_prompt) or ""
    if not isinstance(negative, str):
        raise ValueError(f"negative prompt must be a string, got {type(negative).__name__}")
    for name, text in (("prompt", prompt), ("id", given_id or ""), ("negative prompt", negative)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates (JSON "\ud800") cannot be stored
            raise ValueError(f"{name} is not valid Unicode (lone surrogate at character {error.start})") from None
    return prompt, given_id, _parse_seed(row.get(columns.seed)), negative


def read_corpus(
    source: str,
    run_seed: int = 0,
    columns: ColumnNames | None = None,
    limit: int | None = None,
    split: str = "train",
) -> Corpus:
    """Read, validate and identify every prompt of ``source``.

    Ids: the corpus' own id column when present; otherwise a hash of (prompt, seed), suffixed
    ``-2``, ``-3``… for repeats. Duplicate explicit ids raise ``CorpusError`` before any work.
    """
    columns = columns or ColumnNames()
    corpus = Corpus()
    label = source
    seen: Counter[str] = Counter()
    explicit: dict[str, int] = {}
    for line, row, error in _rows(source, columns, split):
        if limit is not None and len(corpus.prompts) >= limit:
            break
        if row is None:
            corpus.failures.append(ReadFailure(label, line, error))
            continue
        try:
            prompt, given_id, seed, negative = _to_record(row, columns)
        except ValueError as exc:
            corpus.failures.append(ReadFailure(label, line, str(exc), json.dumps(row, default=str)[:500]))
            continue
        if not prompt.strip():
            corpus.blank += 1
            continue
        if given_id is not None:
            if given_id in explicit:
                raise CorpusError(
                    f"{label}: duplicate id {given_id!r} on lines {explicit[given_id]} and {line}; ids must be unique"
                )
            explicit[given_id] = line
            prompt_id = given_id
        else:
            base = content_id(prompt, seed)
            seen[base] += 1
            prompt_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        final_seed = seed if seed is not None else derive_seed(run_seed, prompt_id)
        corpus.prompts.append(PromptRecord(len(corpus.prompts), prompt_id, prompt, final_seed, negative))
    generated = {p.id for p in corpus.prompts if p.id not in explicit}
    clash = generated & set(explicit)
    if clash:
        raise CorpusError(f"{label}: ids {sorted(clash)[:3]} are given explicitly and also generated; give every row an id")
    if corpus.blank:
        logger.info("skipped %d blank prompt rows in %s", corpus.blank, label)
    for failure in corpus.failures:
        logger.error("%s: line %d: %s", failure.source, failure.line, failure.reason)
    return corpus

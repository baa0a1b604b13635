"""One streaming reader per corpus format, each yielding numbered ``Row``s in bounded memory.

Rows are: the lines of a .txt file (LF, CRLF or CR); the lines of a .jsonl file (LF or CRLF); the
records after the header of a .csv file; the rows of a Parquet file or Hugging Face dataset (numbered
from 1). Text files are read as UTF-8 (a byte-order mark is dropped; UTF-16/32 with one is
transcoded). A reader reports an unreadable row as ``Row(error=…)`` and goes on; a source that cannot
be read at all raises ``CorpusError`` before or while reading.
"""

from __future__ import annotations

import glob
import gzip
import json
import stat
from collections import Counter
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .csv_rows import csv_rows
from .lines import BOMS, ANY_BREAK, CHUNK, LF_BREAK, split_lines, utf8_chunks
from .records import (
    MAX_CELL_BYTES, MAX_LINE_BYTES, MAX_ROWS, ColumnNames, CorpusError, Row, check_columns, too_many_rows,
)

BATCH_ROWS = 256
SUPPORTED_FORMATS = (".txt, .jsonl, .csv (each also .gz), .parquet, a glob of such files, a Hugging Face dataset "
                     "folder or hf:NAME")
_GLOB_CHARS = frozenset("*?[")
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_rows(source: str, columns: ColumnNames, split: str, max_rows: int | None = MAX_ROWS) -> Iterator[Row]:
    """The rows of ``source``; the path is checked now, its content as it is read.

    ``max_rows``: refuse at once a table that declares more rows (``None``: no check here)."""
    if not source.strip():
        raise CorpusError("--prompts: the path is empty")
    if source.startswith("hf:"):
        return _hf_stream_rows(source, columns, split, max_rows)
    path = Path(source).expanduser()
    if _is_glob(source, path):
        return _glob_rows(source, columns, split)
    return _file_rows(source, path, columns, split, max_rows)


def corpus_files(source: str) -> list[str] | None:
    """The files ``open_rows`` reads, in its order, for a corpus that is one file or a glob of
    files; ``None`` for a dataset (``hf:``, a folder). Call after ``open_rows`` checked the source."""
    if source.startswith("hf:"):
        return None
    path = Path(source).expanduser()
    if _is_glob(source, path):
        return _glob_files(source)
    return None if path.is_dir() else [str(path)]


def _is_glob(source: str, path: Path) -> bool:
    """Whether ``--prompts`` names files by a pattern (a path that exists is read as named)."""
    return bool(_GLOB_CHARS & set(source)) and not path.exists()


def splittable(path: str) -> bool:
    """Whether byte ranges of this file can be read apart (``range_rows``): uncompressed .txt or
    .jsonl (a row never spans a line feed) without a UTF-16/32 byte-order mark."""
    if Path(path).suffix.lower() not in (".txt", ".jsonl"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4)
    return not any(head.startswith(bom) for bom, name in BOMS if name != "utf-8")


def range_rows(path: str, label: str, columns: ColumnNames, start: int, stop: int | None) -> Iterator[Row]:
    """The rows of bytes ``[start, stop)`` of a ``splittable`` file (``stop`` ``None``: to its end),
    numbered from 1 within the range; ``start`` is 0 or just after a line feed, ``stop`` too."""
    reader = _TEXT_READERS[Path(path).suffix.lower()]
    with _open(Path(path), label) as fh:
        fh.seek(start)
        limited = _Range(fh, None if stop is None else stop - start)
        chunks = utf8_chunks(limited, label) if start == 0 else iter(lambda: limited.read(CHUNK), b"")
        yield from reader(chunks, label, columns)


class _Range:
    """A binary file read up to ``left`` bytes from where it stands (``None``: to its end)."""

    def __init__(self, fh: BinaryIO, left: int | None) -> None:
        self.fh, self.left = fh, left

    def read(self, size: int) -> bytes:
        if self.left is None:
            return self.fh.read(size)
        data = self.fh.read(min(size, self.left))
        self.left -= len(data)
        return data


def _glob_files(pattern: str) -> list[str]:
    paths = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files = [p for p in paths if Path(p).is_file()]
    if not files:
        raise CorpusError(f"--prompts {pattern}: no file matches this pattern")
    return files


def _glob_rows(pattern: str, columns: ColumnNames, split: str) -> Iterator[Row]:
    """The rows of every file the glob matches, in sorted path order, each row naming its file."""
    files = _glob_files(pattern)
    readers = [_file_rows(name, Path(name), columns, split, None) for name in files]  # every file checked now
    return _each_file(zip(files, readers))


def _each_file(readers: Iterable[tuple[str, Iterator[Row]]]) -> Iterator[Row]:
    for name, rows in readers:
        for row in rows:
            yield row._replace(file=name)


def file_rows(path: str, label: str, columns: ColumnNames, split: str) -> Iterator[Row]:
    """The rows of one file of a corpus (``corpus_files``), named ``label`` in messages."""
    return _file_rows(label, Path(path), columns, split, None)


def _file_rows(source: str, path: Path, columns: ColumnNames, split: str, max_rows: int | None) -> Iterator[Row]:
    """The rows of one file or dataset folder (checked now, read as iterated)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CorpusError(f"--prompts {source}: no such file") from None
    except OSError as error:
        raise CorpusError(f"--prompts {source}: cannot read ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        return _hf_rows(str(path), columns, split, max_rows)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise CorpusError(f"--prompts {source}: is {kind}, not a corpus file or folder; save the prompts to a file")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = (suffixes[-2] if len(suffixes) == 2 else "") if compressed else (suffixes[-1] if suffixes else "")
    if suffix == ".parquet" and not compressed:
        return _parquet_rows(path, source, columns, max_rows)
    reader = _TEXT_READERS.get(suffix)
    if reader is None:
        shown = "".join(path.suffixes[-2:]) if compressed else path.suffix
        raise CorpusError(f"--prompts {source}: unknown format {shown!r}; use {SUPPORTED_FORMATS}")
    return _text_rows(path, source, columns, reader, compressed)


@contextmanager
def _open(path: Path, label: str, compressed: bool = False) -> Iterator[BinaryIO]:
    try:
        fh = gzip.open(path, "rb") if compressed else path.open("rb")
    except OSError as error:
        raise CorpusError(f"--prompts {label}: cannot read ({error.strerror or error})") from None
    with fh:
        yield fh


def _text_rows(path: Path, label: str, columns: ColumnNames, reader: Callable[..., Iterator[Row]],
               compressed: bool = False) -> Iterator[Row]:
    with _open(path, label, compressed) as fh:
        yield from reader(_checked_gzip(utf8_chunks(fh, label), label) if compressed else utf8_chunks(fh, label), label, columns)


def _checked_gzip(chunks: Iterator[bytes], label: str) -> Iterator[bytes]:
    """Chunks of a gzip file; a damaged or truncated one as ``CorpusError``."""
    try:
        yield from chunks
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise CorpusError(f"--prompts {label}: not a readable gzip file ({error})") from None


def _txt_rows(chunks: Iterable[bytes], label: str, columns: ColumnNames) -> Iterator[Row]:
    for line in split_lines(chunks, ANY_BREAK):
        text, error = line.decode()
        yield Row(line.number, error=error) if text is None else Row(line.number, None, "", text, False, "", text)


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated = {k for k, n in Counter(k for k, _ in pairs).items() if n > 1} if len(self) < len(pairs) else set()


def _jsonl_rows(chunks: Iterable[bytes], label: str, columns: ColumnNames) -> Iterator[Row]:
    used = set(columns.used())
    for line in split_lines(chunks, LF_BREAK):
        text, error = line.decode()
        if text is None:
            yield Row(line.number, error=error)
        elif not text.strip():
            yield Row(line.number, blank=True)
        else:
            yield _json_row(line.number, text, used)


def _json_row(number: int, text: str, used: set[str]) -> Row:
    try:  # numbers are kept exact; a byte-order mark opening a line (files joined with cat) is no content
        value = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_Object, parse_float=Decimal)
    except json.JSONDecodeError as error:
        return Row(number, error=f"invalid JSON: {error.msg} at column {error.colno}", raw=text)
    except (ValueError, RecursionError) as error:  # e.g. an integer of more than 4300 digits, deep nesting
        return Row(number, error=f"invalid JSON: {error if isinstance(error, ValueError) else 'nested too deeply'}", raw=text)
    if not isinstance(value, dict):
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
        return Row(number, error=f"expected a JSON object, got {kind}", raw=text)
    twice = sorted(value.repeated & used)
    if twice:
        return Row(number, error=f"key {twice[0]!r} appears more than once", raw=text)
    return Row(number, value, raw=text)


def _parquet_rows(path: Path, label: str, columns: ColumnNames, max_rows: int | None) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path), buffer_size=MAX_LINE_BYTES)  # read page by page, not whole
        names = parquet.schema_arrow.names
    except Exception as error:  # pyarrow raises several types for damaged files
        raise CorpusError(f"{label}: not a readable Parquet file ({error})") from None
    wanted = _wanted(names, columns, label, parquet.metadata.num_rows, max_rows)
    try:
        with parquet:
            yield from _arrow_rows(_guarded(parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted), label, "Parquet file"))
    finally:
        pa.default_memory_pool().release_unused()  # decoded pages go back to the system before generation


def _hf_rows(source: str, columns: ColumnNames, split: str, max_rows: int | None) -> Iterator[Row]:
    dataset = _load_hf(source, split)
    wanted = _wanted(dataset.column_names, columns, source, len(dataset), max_rows)
    view = dataset.select_columns(wanted).with_format("arrow")
    yield from _arrow_rows(_guarded(view.iter(batch_size=BATCH_ROWS), source, "Hugging Face dataset"))


def _hf_stream_rows(source: str, columns: ColumnNames, split: str, max_rows: int | None) -> Iterator[Row]:
    """``hf:NAME`` (a hub id or a local data folder) streamed: nothing is downloaded or cached
    whole; the declared row count is checked where the dataset's info has one."""
    import datasets

    try:
        dataset = datasets.load_dataset(source[3:], split=split, streaming=True)
        names = dataset.column_names
        if names is None:
            names = list(next(iter(dataset.take(1))).keys())
    except Exception as error:  # datasets raises many types; the message is what matters
        raise CorpusError(f"{source}: cannot load as a Hugging Face dataset ({error})") from None
    splits = (dataset.info.splits or {}) if dataset.info else {}
    declared = splits[split].num_examples if split in splits and splits[split].num_examples else 0
    wanted = _wanted(names, columns, source, declared, max_rows)
    view = dataset.select_columns(wanted).with_format("arrow")
    yield from _arrow_rows(_guarded(view.iter(batch_size=BATCH_ROWS), source, "Hugging Face dataset"))


def _load_hf(source: str, split: str) -> Any:
    import datasets

    try:
        if any((Path(source) / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            dataset = datasets.load_from_disk(source)
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise CorpusError(f"--prompts {source}: no split {split!r} (splits: {', '.join(dataset)}); choose one with --split")
                dataset = dataset[split]
            return dataset
        return datasets.load_dataset(source, split=split)
    except CorpusError:
        raise
    except Exception as error:  # datasets raises many types; the message is what matters
        raise CorpusError(f"{source}: cannot load as a Hugging Face dataset ({error})") from None


def _wanted(names: list[str], columns: ColumnNames, label: str, declared: int, max_rows: int | None) -> list[str]:
    """The used columns a table has (``CorpusError`` for a missing prompt column, a repeated column
    or more rows than ``max_rows``)."""
    check_columns(names, columns, label)
    if max_rows is not None and declared > max_rows:
        raise CorpusError(too_many_rows(label, max_rows))
    return [name for name in columns.used() if name in names]


def _guarded(batches: Iterable[Any], label: str, what: str) -> Iterator[Any]:
    """Arrow batches; a damaged file's error as ``CorpusError``."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # pyarrow and datasets raise several types for damaged data
            raise CorpusError(f"{label}: not a readable {what} ({error})") from None
        yield batch


def _arrow_rows(batches: Iterable[Any]) -> Iterator[Row]:
    """Rows of Arrow record batches or tables, numbered from 1; an over-long cell is left out of
    ``values`` (never converted to Python) and makes the row an error."""
    number = 0
    for batch in batches:
        cells, long = {}, {}
        for name in batch.schema.names:
            cells[name], long[name] = _cells(batch.column(name))
        for i in range(batch.num_rows):
            number += 1
            too_long = [name for name, flags in long.items() if flags and flags[i]]
            values = {name: cells[name][i] for name in cells if name not in too_long}
            error = f"column {too_long[0]!r} is longer than {MAX_CELL_BYTES} bytes" if too_long else ""
            yield Row(number, values, error=error)


def _cells(array: Any) -> tuple[list[Any], list[bool] | None]:
    """A column's values as Python objects, over-long strings replaced by ``None`` (and flagged)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return array.to_pylist(), None
    over = pc.fill_null(pc.greater(pc.binary_length(array), MAX_CELL_BYTES), False)
    if not pc.any(over).as_py():
        return array.to_pylist(), None
    flags = over.to_pylist()  # rare: convert cell by cell, never the long ones (and copy nothing)
    return [None if long else array[i].as_py() for i, long in enumerate(flags)], flags


_TEXT_READERS: dict[str, Callable[[Iterable[bytes], str, ColumnNames], Iterator[Row]]] = {
    ".txt": _txt_rows, ".jsonl": _jsonl_rows, ".csv": csv_rows,
}

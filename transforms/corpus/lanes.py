"""Pass 1 of a large corpus on several cores: the corpus cut into lanes, each read by its own process.

A lane is a run of consecutive ``Unit``s of the corpus' bytes: whole files, or byte ranges of an
uncompressed .txt or .jsonl file cut just after a line feed (a row never spans one), so lanes hold
about equal bytes. Each lane's process reads its rows exactly as one pass would (``RowReader``)
into its own folder: spill, id buckets, counts and failures numbered within the lane. The driver
then joins the lanes in order: counts add up, failure lines and the ids' places shift to the whole
corpus' terms (``ids.Shift``), the id buckets are checked across lanes as one, and the caps
(``MAX_ROWS``, ``MAX_READ_FAILURES``) count the whole corpus. The result is the ``CorpusScan`` one
pass gives: the same prompts, ids, seeds, failures and errors, in the same order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator, NamedTuple

from .corpus_scan import CorpusScan, RowReader, TooManyFailures, log_scan, too_many_failures
from .ids import IdBook, Shift
from .processes import map_in_processes
from .readers import CHUNK, corpus_files, file_rows, range_rows, splittable
from .records import ColumnNames, CorpusError, ReadFailure, Row, too_many_rows
from .spill import RecordFile
from . import records as limits

logger = logging.getLogger(__name__)
MIN_LANE_BYTES = 8 << 20
"""A lane reads at least this many bytes (smaller corpora are read in one pass: processes cost more)."""


class Unit(NamedTuple):
    """Bytes ``[start, stop)`` of one corpus file (``stop`` ``None``: to its end); ``file`` is the
    name its rows carry (``""`` for a corpus of one file)."""

    file: str
    path: str
    start: int = 0
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None


class LaneResult(NamedTuple):
    """What one lane read, numbered within the lane (rows from 1, lines from 1 in a cut file)."""

    rows_read: int
    prompts: int
    blank: int
    failures: list[ReadFailure]
    sources: list[str]
    last_line: int
    """The last line read of the lane's last unit (what the next lane's lines start after)."""
    error: str
    too_many_failures: bool


def plan_lanes(source: str, workers: int) -> list[list[Unit]] | None:
    """The lanes of a corpus of files (``None``: read it in one pass: a dataset, too few bytes for
    two lanes, or no cut possible). Call after ``open_rows`` checked ``source``."""
    files = corpus_files(source)
    if files is None or workers < 2:
        return None
    sizes = [os.path.getsize(path) for path in files]
    total = sum(sizes)
    count = min(workers, total // MIN_LANE_BYTES)
    if count < 2:
        return None
    named = files != [str(Path(source).expanduser())]  # a glob: rows name their file
    cuts = sorted({_cut(files, sizes, total * k // count) for k in range(1, count)} - {0, total})
    bounds = [0, *cuts, total]
    lanes = [list(_units(files, sizes, low, high, named, high == total)) for low, high in zip(bounds, bounds[1:])]
    return lanes if len(lanes) > 1 else None


def _cut(files: list[str], sizes: list[int], target: int) -> int:
    """Where the corpus' bytes (files end to end) are cut near ``target``: after the first line feed
    at or after it in a ``splittable`` file, else at the end of the file it falls in."""
    offset = 0
    for path, size in zip(files, sizes):
        if target < offset + size:
            end = offset + size
            return offset + _after_line_feed(path, target - offset, size) if splittable(path) else end
        offset += size
    return offset


def _after_line_feed(path: str, position: int, size: int) -> int:
    """The offset just after the first line feed at or after byte ``position - 1`` (a line starts
    there), or ``size``."""
    with open(path, "rb") as fh:
        fh.seek(max(position - 1, 0))
        offset = fh.tell()
        while chunk := fh.read(CHUNK):
            found = chunk.find(b"\n")
            if found >= 0:
                return min(offset + found + 1, size)
            offset += len(chunk)
    return size


def _units(files: list[str], sizes: list[int], low: int, high: int, named: bool, last: bool) -> Iterator[Unit]:
    """The parts of the files within corpus bytes ``[low, high)`` (an empty file where it stands:
    it is still read, and may be refused)."""
    offset = 0
    for path, size in zip(files, sizes):
        start, stop = max(low - offset, 0), min(high - offset, size)
        if start < stop or (size == 0 and (low <= offset < high or (last and offset == high))):
            yield Unit(path if named else "", path, start, None if stop == size else stop)
        offset += size


def scan_lanes(scan: CorpusScan, source: str, columns: ColumnNames, split: str, lanes: list[list[Unit]], workers: int) -> None:
    """Pass 1 of ``source`` in ``lanes``, one process each, joined into ``scan`` (whose folder holds
    a folder a lane); ``CorpusError`` as one pass raises it."""
    folders = [scan.folder / f"lane-{i:04d}" for i in range(len(lanes))]
    tasks = [(units, source, columns, split, folder) for units, folder in zip(lanes, folders)]
    logger.info("%s: reading in %d lanes on %d processes", source, len(lanes), min(workers, len(lanes)))
    results = map_in_processes(scan_lane, tasks, workers)
    _join(scan, source, lanes, results, folders)


def scan_lane(units: list[Unit], label: str, columns: ColumnNames, split: str, folder: Path) -> LaneResult:
    """Read one lane into ``folder`` (run in a lane's process): its spill and id buckets there, the
    rest returned."""
    folder.mkdir(parents=True)
    scan = CorpusScan(folder, 0, ids=IdBook(folder, label), spills=[RecordFile(folder / "prompts")])
    lines = [0]
    error, too_many = "", False
    try:
        RowReader(label, columns, scan).read(_lane_rows(units, label, columns, split, lines), None, log=False)
    except TooManyFailures:
        too_many = True
    except CorpusError as problem:
        error = str(problem)
    scan.spills[-1].close()
    scan.ids.close()
    return LaneResult(scan.rows_read, scan.num_prompts, scan.blank, scan.failures, scan.ids.sources, lines[0], error, too_many)


def _lane_rows(units: list[Unit], label: str, columns: ColumnNames, split: str, lines: list[int]) -> Iterator[Row]:
    """The rows of a lane's units in order, each naming its file; ``lines[0]`` ends as the last
    line number of a last unit that stops inside its file."""
    for i, unit in enumerate(units):
        name = unit.file or label
        rows = file_rows(unit.path, name, columns, split) if unit.whole else range_rows(unit.path, name, columns, unit.start, unit.stop)
        if i == len(units) - 1 and unit.stop is not None:  # counted: the next lane's lines go on from here
            for row in rows:
                lines[0] = row.line
                yield row._replace(file=unit.file) if unit.file else row
        elif unit.file:
            for row in rows:
                yield row._replace(file=unit.file)
        else:
            yield from rows


def _join(scan: CorpusScan, label: str, lanes: list[list[Unit]], results: list[LaneResult], folders: list[Path]) -> None:
    """The lanes' results, in order, into ``scan``; the caps and the ids checked over the whole corpus."""
    names: dict[str, int] = {}
    parts: list[tuple[Path, Shift]] = []
    carried: tuple[str, int] | None = None  # a file cut at the previous lane's end: its name, lines read
    for units, result, folder in zip(lanes, results, folders):
        first = units[0]
        first_name = first.file or label
        shift = carried[1] if first.start > 0 and carried is not None and carried[0] == first_name else 0
        if scan.rows_read + result.rows_read > limits.MAX_ROWS:
            raise CorpusError(too_many_rows(label, limits.MAX_ROWS))
        failures = [replace(f, line=f.line + shift) if shift and f.source == first_name else f for f in result.failures]
        if result.too_many_failures or len(scan.failures) + len(failures) > limits.MAX_READ_FAILURES:
            raise too_many_failures(label, (scan.failures + failures)[0])
        if result.error:
            raise CorpusError(result.error)
        sources = tuple(names.setdefault(name, len(names)) for name in result.sources)
        line_source = result.sources.index(first_name) if shift and first_name in result.sources else -1
        parts.append((folder, Shift(scan.rows_read, scan.num_prompts, sources, line_source, shift)))
        scan.rows_read += result.rows_read
        scan.num_prompts += result.prompts
        scan.blank += result.blank
        scan.failures.extend(failures)
        scan.spills.append(RecordFile(folder / "prompts", written=result.prompts))
        last = units[-1]
        if last.stop is None:
            carried = None
        else:
            carried = (last.file or label, result.last_line + (shift if len(units) == 1 else 0))
    scan.ids = IdBook.joined(scan.folder, label, list(names), parts)
    scan.ids.check()
    log_scan(label, scan)

"""One streaming pass over a corpus into a ``CorpusScan``: counts and failures in memory, prompts on disk.

Pass 1 (``scan_corpus``) reads every row once, validates it and appends each prompt to a spill
file and each id to the id buckets (``ids``); the buckets are then checked (duplicate or clashing
ids refuse the corpus before any work). A large corpus of files is read on several cores at once
(``lanes``), with the same result. Pass 2 (``CorpusScan.records``) reads the spill back in input
order with each prompt's final id and seed. Memory stays bounded whatever the corpus size; the
spill takes about the corpus' own size on local disk (``TMPDIR``, or ``workdir``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .corpus_scan import CorpusScan, RowReader
from .ids import IdBook
from .lanes import plan_lanes, scan_lanes
from .processes import collection_paused, default_workers
from .readers import open_rows
from .records import ColumnNames
from .spill import RecordFile
from . import records as limits


def scan_corpus(
    source: str,
    run_seed: int = 0,
    columns: ColumnNames | None = None,
    limit: int | None = None,
    split: str = "train",
    workdir: str | None = None,
    workers: int | None = None,
) -> CorpusScan:
    """Read, validate and identify every row of ``source`` in one pass (see the module docstring).

    ``CorpusError`` for duplicate or clashing ids, more than ``MAX_ROWS`` rows or
    ``MAX_READ_FAILURES`` unreadable ones; ``limit`` stops after that many prompts. ``workers``:
    the processes that may read a large corpus of files (default ``default_workers()``; 1: this
    one only); a ``limit`` reads in this process."""
    columns = columns or ColumnNames()
    folder = Path(tempfile.mkdtemp(prefix="daam-corpus-", dir=workdir))
    scan = CorpusScan(folder, run_seed)
    try:
        with collection_paused():
            rows = open_rows(source, columns, split, limits.MAX_ROWS if limit is None else None)
            workers = default_workers() if workers is None else workers
            lanes = plan_lanes(source, workers) if limit is None else None
            if lanes is None:
                scan.ids, scan.spills = IdBook(folder, source), [RecordFile(folder / "prompts")]
                RowReader(source, columns, scan).read(rows, limit)
                scan.ids.check()
            else:  # the rows checked the source; the lanes read it
                scan_lanes(scan, source, columns, split, lanes, workers)
    except BaseException:
        scan.close()
        raise
    return scan

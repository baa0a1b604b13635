"""Write a shard's files and commit it: data files renamed into place, then the stats marker last.

A shard is complete exactly when its stats JSON exists. Data files are written under hidden
temporary names (outside every ``load_dataset`` pattern) and renamed; an empty shard never gets a
data file.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow.parquet as pq
from datasets import Features

from schemas.output_records import FileInfo, ShardStats, failure_lines
import pyarrow as pa

from schemas.record import SCHEMA_VERSION, Record, records_to_table, segmentation_rows, segmentation_table, wds_sample

from .hooks import RunHooks
from .layout import SEGMENTATION_FORMAT, TMP_DIR, OutputLayout
from .results import ShardResult
from .sharding import ShardSpec

ROW_GROUP_MAX_ROWS = 100
ROW_GROUP_TARGET_BYTES = 64 * 1024 * 1024
WDS_MTIME = 0.0


def row_group_rows(table_bytes: int, num_rows: int) -> int:
    """Rows per row group: at most 100 and about 64 MB uncompressed (viewer and streaming friendly)."""
    per_row = max(1, table_bytes // max(1, num_rows))
    return max(1, min(ROW_GROUP_MAX_ROWS, ROW_GROUP_TARGET_BYTES // per_row))


def _write_parquet(layout: OutputLayout, temp: str, table: pa.Table) -> None:
    with layout.fs.open(temp, "wb") as fh:
        pq.write_table(
            table,
            fh,
            row_group_size=row_group_rows(table.nbytes, table.num_rows),
            write_page_index=True,
            compression="zstd",
        )


def _write_webdataset(layout: OutputLayout, temp: str, records: list[Record], spec: ShardSpec) -> None:
    import webdataset as wds

    with layout.fs.open(temp, "wb") as fh:
        with wds.TarWriter(fh, mtime=WDS_MTIME, encoder=False) as writer:
            for i, record in enumerate(records):
                writer.write(wds_sample(f"s{spec.index:05d}r{i:06d}", record))


def shard_formats(formats: Sequence[str], features: Features) -> list[str]:
    """The files a shard writes: the run's formats, and the segmentation config's Parquet file when
    the features carry labels (a run with classes)."""
    return [*formats, SEGMENTATION_FORMAT] if "label" in features else list(formats)


def _write(layout: OutputLayout, fmt: str, temp: str, result: ShardResult, features: Features) -> None:
    if fmt == "parquet":
        _write_parquet(layout, temp, records_to_table(result.records, features))
    elif fmt == SEGMENTATION_FORMAT:
        _write_parquet(layout, temp, segmentation_table(result.records))
    else:
        _write_webdataset(layout, temp, result.records, result.spec)


def _has_rows(fmt: str, records: list[Record]) -> bool:
    if fmt == SEGMENTATION_FORMAT:
        return bool(segmentation_rows(records))  # rows that name no class are not segmentation rows
    return bool(records)


def commit_shard(
    layout: OutputLayout,
    result: ShardResult,
    formats: Sequence[str],
    features: Features,
    fingerprint: str,
    hooks: RunHooks | None = None,
) -> ShardStats:
    """Write data and failure files of a shard, then its stats marker; return the stats."""
    hooks = hooks or RunHooks()
    spec = result.spec
    layout.makedirs(TMP_DIR)
    files: dict[str, FileInfo] = {}
    for fmt in shard_formats(formats, features):
        final = layout.data_file(spec.name, fmt)
        if not _has_rows(fmt, result.records):
            layout.remove(final)
            continue
        temp = layout.temp_file(final)
        try:
            _write(layout, fmt, temp, result, features)
            hooks.before_data_write(temp)
        except OSError:  # e.g. a full disk: leave no partial temp file behind
            try:
                layout.remove(temp)
            except OSError:
                pass
            raise
        hooks.at("mid_write")
        files[fmt] = FileInfo(layout.relative(final), layout.fs.size(temp), layout.sha256(temp))
        layout.commit(temp, final)
    hooks.at("after_data_rename")
    failures_path = layout.failures_file(spec.name)
    if result.failures:
        layout.write_bytes_atomic(failures_path, failure_lines(result.failures))
    else:
        layout.remove(failures_path)
    stats = ShardStats(
        shard=spec.name,
        index=spec.index,
        count=spec.count,
        prompts=spec.stop - spec.start,
        rows=len(result.records),
        failed=len(result.failures),
        ids=[r.id for r in result.records],
        failed_ids=[str(f.id) for f in result.failures],
        files=files,
        seconds=round(result.seconds, 3),
        schema_version=SCHEMA_VERSION,
        fingerprint=fingerprint,
        segmentation_ids=[r.id for r in segmentation_rows(result.records)] if "label" in features else None,
    )
    layout.write_json_atomic(layout.stats_file(spec.name), stats.to_dict())
    hooks.shard_committed()
    return stats

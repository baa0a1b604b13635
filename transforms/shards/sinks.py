"""Write a shard's files and commit it: data files renamed into place, then the stats marker last.

A shard is complete exactly when its stats JSON exists. Data files are written under hidden
temporary names (outside every ``load_dataset`` pattern) and renamed; an empty shard never gets a
data file.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from schemas.output_records import FileInfo, ShardStats, failure_lines
from schemas.record import SCHEMA_VERSION, Record, records_to_table, segmentation_rows, segmentation_table, wds_sample

from transforms.hooks import RunHooks
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


def leaf_columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Every Parquet leaf column of ``schema``: its dotted path as the writer names it (lists as
    ``name.list.element``, struct fields as ``name.field``) and its Arrow type."""
    leaves: list[tuple[str, pa.DataType]] = []

    def visit(path: str, kind: pa.DataType) -> None:
        kind = getattr(kind, "storage_type", kind)  # extension types (datasets' ArrayND) store a list
        if pa.types.is_struct(kind):
            for field in kind:
                visit(f"{path}.{field.name}", field.type)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            visit(f"{path}.list.element", kind.value_type)
        else:
            leaves.append((path, kind))

    for field in schema:
        visit(field.name, field.type)
    return leaves


def column_encodings(schema: pa.Schema) -> dict[str, list[str]]:
    """Per-column encodings: no dictionary for floating-point leaves (maps, scores: unique values
    a dictionary only inflates), float32/float64 ones in BYTE_STREAM_SPLIT, which zstd compresses
    best (float32 maps 157 -> 93 KiB a row, ``docs/map-storage.md``; float16 stays PLAIN: its
    split encoding needs Parquet readers from 2024 on); every other leaf keeps the writer's
    default dictionary (uint8 maps and repeated strings gain from it)."""
    leaves = leaf_columns(schema)
    floats = {path: kind for path, kind in leaves if pa.types.is_floating(kind)}
    return {
        "use_dictionary": [path for path, _ in leaves if path not in floats],
        "use_byte_stream_split": [path for path, kind in floats.items() if not pa.types.is_float16(kind)],
    }


def _write_parquet(layout: OutputLayout, temp: str, table: pa.Table) -> None:
    with layout.fs.open(temp, "wb") as fh:
        pq.write_table(
            table,
            fh,
            row_group_size=row_group_rows(table.nbytes, table.num_rows),
            write_page_index=True,
            compression="zstd",
            **column_encodings(table.schema),  # type: ignore[arg-type]
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

"""Per-shard checks: the stats marker against the files (present, size, sha256), each Parquet file
(schema, rows, ids, maps, images) and WebDataset tar (members, rows), and the failure records."""

from __future__ import annotations

import io
import json
import posixpath
from typing import Any

import numpy as np

from schemas.output_records import FailureRecord, FileInfo, ShardStats
from transforms.shards.layout import FORMAT_DIRS, SEGMENTATION_FORMAT, STATS_DIR

from .context import Validation, feature_diff
from .row_checks import MISSING, check_concept_maps, check_label, check_row, check_timestep_maps

BATCH_ROWS = 32


def check_shard(v: Validation, shard: str, stats: ShardStats) -> dict[str, FileInfo]:
    """Check every data file of a committed shard, then its failure records; the files whose rows
    are left to other checks (the segmentation config's), by format."""
    present: dict[str, FileInfo] = {}
    for fmt in v.formats:
        if fmt not in FORMAT_DIRS:
            continue
        full = v.layout.data_file(shard, fmt)
        rel = v.rel(full)
        info = stats.files.get(fmt)
        rows = len(stats.segmentation_ids or []) if fmt == SEGMENTATION_FORMAT else stats.rows
        if rows == 0:
            if info or v.layout.exists(full):
                v.add(shard, "stats", f"a shard with 0 rows must have no {fmt} file", rel)
            continue
        if not info:
            v.add(shard, "stats", f"stats list no {fmt} file for {rows} rows", f"{STATS_DIR}/{shard}.json")
            continue
        if not _check_file(v, shard, info, checksum=v.rows_checked(shard)):
            continue
        if fmt == "parquet":
            check_parquet(v, shard, info.path, stats)
        elif fmt == SEGMENTATION_FORMAT:
            present[fmt] = info  # its rows are checked by segmentation_checks
        elif v.rows_checked(shard):  # outside a --sample a tar is checked by size only
            check_webdataset(v, shard, info.path, stats)
    check_failures(v, shard, stats)
    return present


def _check_file(v: Validation, shard: str, info: FileInfo, checksum: bool = True) -> bool:
    """Size and (``checksum``) sha256 of a listed data file; whether it exists."""
    full = v.layout.path(info.path)
    if not v.layout.exists(full):
        v.add(shard, "missing_file", "data file listed in the stats marker is missing", info.path)
        return False
    size = v.layout.fs.size(full)
    if info.bytes is not None and size != info.bytes:
        v.add(shard, "size", f"{size} bytes, stats say {info.bytes} (truncated or rewritten)", info.path)
    if checksum and info.sha256 and v.layout.sha256(full) != info.sha256:
        v.add(shard, "checksum", "sha256 differs from the stats marker", info.path)
    return True


def check_rows(v: Validation, shard: str, rel: str, rows: int, expected_ids: list[str], ids: list[str], count: int) -> None:
    """Row count and ids read from a file against the stats marker's (``rows``, ``expected_ids``);
    remember where each id is."""
    if count != rows:
        v.add(shard, "row_count", f"{count} rows, stats say {rows}", rel)
    if ids != list(expected_ids):
        v.add(shard, "ids", "row ids differ from the ids in the stats marker", rel)
    v.note_ids(rel, ids)


def read_parquet(v: Validation, shard: str, rel: str, features: Any, source: Any = None) -> Any:
    """The Parquet file at ``rel`` (read from ``source``, an open file, when given) if it reads and
    its schema is ``features``' (else ``None``, with the problem reported)."""
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        parquet = pq.ParquetFile(source if source is not None else io.BytesIO(v.read_bytes(rel)))
        schema = parquet.schema_arrow
    except Exception as error:  # pyarrow raises several types for damaged files
        v.add(shard, "unreadable", f"not a readable Parquet file ({type(error).__name__}: {error})", rel)
        return None
    try:
        found = Features.from_arrow_schema(schema)
    except Exception as error:
        v.add(shard, "schema", f"Arrow schema has no usable features metadata ({error})", rel)
        return None
    if found != features:
        v.add(shard, "schema", f"features differ from run.json's: {feature_diff(found, features)}", rel)
        return None
    if schema.remove_metadata() != features.arrow_schema.remove_metadata():
        v.add(shard, "schema", "Arrow schema differs from the features' schema", rel)
        return None
    return parquet


def check_parquet(v: Validation, shard: str, rel: str, stats: ShardStats) -> None:
    """Schema against run.json's features, then every row, batch by batch (outside a ``--sample``:
    the id column only). The file is read as it is checked, never whole."""
    with v.layout.fs.open(v.layout.path(rel), "rb") as fh:
        parquet = read_parquet(v, shard, rel, v.features, fh)
        if parquet is None:
            return
        rows = v.rows_checked(shard)
        ids: list[str] = []
        count = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS if rows else 4096, columns=None if rows else ["id"]):
                if rows:
                    _check_batch(v, shard, rel, batch, count)
                ids.extend(x for x in batch.column("id").to_pylist() if x is not None)
                count += batch.num_rows
        except Exception as error:  # a damaged page shows only when it is read
            v.add(shard, "unreadable", f"cannot read rows ({type(error).__name__}: {error})", rel)
            return
    if parquet.metadata.num_rows != count:
        v.add(shard, "row_count", f"footer says {parquet.metadata.num_rows} rows, read {count}", rel)
    check_rows(v, shard, rel, stats.rows, stats.ids, ids, count)


def _check_batch(v: Validation, shard: str, rel: str, batch: Any, first: int) -> None:
    """Check the rows of one record batch; ``first`` is the index of its first row in the file."""
    from schemas.maps import SCALE_COLUMNS, decode_timestep_maps, token_maps_column
    from schemas.record import TIMESTEP_COLUMN

    batch_ids = batch.column("id").to_pylist()
    tokens = batch.column("tokens").to_pylist()
    words = batch.column("words").to_pylist()
    images = batch.column("image").to_pylist()
    labels = _column(batch, "label")
    scales = {name: _column(batch, SCALE_COLUMNS[name]) for name in ("token_maps", TIMESTEP_COLUMN, "concept_maps")}
    concepts = _column(batch, "concepts") if v.concepts else None
    concept_column = token_maps_column(batch.column("concept_maps")) if v.concepts and "concept_maps" in batch.schema.names else None
    overlays, drawn = _column(batch, "overlay"), _column(batch, "overlay_words")
    maps_column = token_maps_column(batch.column("token_maps"))
    timestep_column = batch.column(TIMESTEP_COLUMN) if v.timestep_bins is not None else None
    for i, row_id in enumerate(batch_ids):
        maps, error = _decode_maps(maps_column[i], v.map_size)
        image = images[i] or {}
        scale = _at(scales["token_maps"], i)
        overlay = _at(overlays, i)
        overlay_row = (None if overlay is MISSING else (overlay or {}).get("bytes"), _at(drawn, i, None))
        check_row(v, shard, rel, first + i, tokens[i] or [], maps, image.get("bytes"), words[i], error,
                  scale=scale, overlay=overlay_row)
        if timestep_column is not None:
            binned, error = _decode_maps(timestep_column[i], v.map_size, decode_timestep_maps)
            check_timestep_maps(v, shard, rel, first + i, tokens[i] or [], binned, error, _at(scales[TIMESTEP_COLUMN], i))
        if v.concepts:
            concept_maps, error = (None, "column missing") if concept_column is None else _decode_maps(concept_column[i], v.map_size)
            check_concept_maps(v, shard, rel, first + i, _at(concepts, i, None), concept_maps, error,
                               _at(scales["concept_maps"], i))
        if labels is not None:
            check_label(v, shard, rel, f"row {first + i}", (labels[i] or {}).get("bytes"))
        if row_id is None:
            v.add(shard, "ids", f"row {first + i}: null id", rel)


def _column(batch: Any, name: str) -> list | None:
    """A column of a record batch as Python values, ``None`` if the batch has no such column."""
    return batch.column(name).to_pylist() if name in batch.schema.names else None


def _at(values: list | None, i: int, absent: Any = MISSING) -> Any:
    """Row ``i`` of a column read by ``_column``; ``absent`` when the column is not there."""
    return absent if values is None else values[i]


def _decode_maps(cell: Any, map_size: tuple[int, ...] | None, decode: Any = None) -> tuple[np.ndarray | None, str]:
    """One ``token_maps`` cell (or, with ``decode``, another maps cell) as an array, or ``None``
    and why it is not one."""
    from schemas.maps import decode_token_maps

    try:
        return (decode or decode_token_maps)(cell, tuple(map_size or (0, 0))), ""  # type: ignore[arg-type]
    except ValueError as error:  # names what is wrong: null, ragged rows, null values
        return None, str(error)
    except (TypeError, IndexError) as error:
        return None, f"maps do not form an array ({error})"


def check_webdataset(v: Validation, shard: str, rel: str, stats: ShardStats) -> None:
    """Every sample of a tar shard has image, metadata and maps, read as a WebDataset reader reads it."""
    from schemas.maps import SCALE_COLUMNS
    from schemas.record import (
        WDS_CONCEPT_MAPS, WDS_EXTENSIONS, WDS_IMAGE, WDS_MAPS, WDS_META, WDS_OVERLAY, WDS_TIMESTEP_MAPS,
    )

    try:
        samples = read_tar_samples(v.read_bytes(rel), rel)
    except Exception as error:  # tarfile and webdataset raise several types for damaged archives
        v.add(shard, "unreadable", f"not a readable tar file ({type(error).__name__}: {error})", rel)
        return
    ids: list[str] = []
    required = (*WDS_EXTENSIONS, *((WDS_TIMESTEP_MAPS,) if v.timestep_bins is not None else ()),
                *((WDS_OVERLAY,) if v.overlay else ()), *((WDS_CONCEPT_MAPS,) if v.concepts else ()))
    for row, sample in enumerate(samples):
        key = sample["__key__"]
        missing = [e for e in required if e not in sample]
        if missing:
            v.add(shard, "unreadable", f"sample {key} lacks {', '.join(missing)}", rel)
            continue
        try:
            meta = json.loads(sample[WDS_META].decode("utf-8"))
            ids.append(meta["id"])
            tokens = meta.get("tokens") or []
            words = meta.get("words")
        except (ValueError, KeyError) as error:
            v.add(shard, "unreadable", f"sample {key}: bad JSON ({error})", rel)
            continue
        maps, error_text = _load_npy(sample[WDS_MAPS], WDS_MAPS)
        check_row(v, shard, rel, row, tokens, maps, sample[WDS_IMAGE], words, error_text,
                  scale=meta.get(SCALE_COLUMNS["token_maps"], MISSING),
                  overlay=(sample.get(WDS_OVERLAY), meta.get("overlay_words")))
        if v.timestep_bins is not None:
            check_timestep_maps(v, shard, rel, row, tokens, *_load_npy(sample[WDS_TIMESTEP_MAPS], WDS_TIMESTEP_MAPS),
                                meta.get(SCALE_COLUMNS["timestep_maps"], MISSING))
        if v.concepts:
            check_concept_maps(v, shard, rel, row, meta.get("concepts"), *_load_npy(sample[WDS_CONCEPT_MAPS], WDS_CONCEPT_MAPS),
                               meta.get(SCALE_COLUMNS["concept_maps"], MISSING))
    check_rows(v, shard, rel, stats.rows, stats.ids, ids, len(samples))


def _load_npy(data: bytes, name: str) -> tuple[np.ndarray | None, str]:
    """A ``.npy`` member as an array, or ``None`` and why it does not load."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), ""
    except (ValueError, OSError, EOFError) as error:
        return None, f"{name} does not load ({error})"


class _NamedStream(io.BytesIO):
    """A file's bytes that print as its name (webdataset appends `` @ <stream>`` to read errors)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def read_tar_samples(data: bytes, rel: str) -> list[dict[str, Any]]:
    """The samples of a tar shard in file order: members grouped by key (the name up to its first dot)."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    stream = _NamedStream(data, rel)
    members = ({**member, "__url__": rel} for member in tar_file_iterator(stream, skip_meta=None))
    try:
        return list(group_by_keys(members, keys=_split_member, lcase=False))
    except Exception as error:
        first = error.args[0] if error.args else ""
        if isinstance(first, str):  # drop what webdataset appended: the stream's name, context values
            error.args = (first.removesuffix(f" @ {stream}"),)
        raise


def _split_member(name: str) -> tuple[str, str]:
    key, _, ext = posixpath.basename(name).partition(".")
    return key, ext


def check_failures(v: Validation, shard: str, stats: ShardStats) -> None:
    """As many failure records as the stats marker counts failed prompts."""
    full = v.layout.failures_file(shard)
    rel = v.rel(full)
    failed = int(stats.failed)
    if not v.layout.exists(full):
        if failed:
            v.add(shard, "failures", f"stats count {failed} failed prompts but there are no failure records", rel)
        return
    try:
        lines = v.read_bytes(rel).decode("utf-8").splitlines()
        records = [FailureRecord.from_json(line) for line in lines if line.strip()]
    except (OSError, ValueError) as error:  # RecordError is a ValueError
        v.add(shard, "failures", f"unreadable failure records ({error})", rel)
        return
    if len(records) != failed:
        v.add(shard, "failures", f"{len(records)} failure records, stats say {failed}", rel)

"""Checks of a run with classes: each shard's ``segmentation/`` Parquet file (features, ids, label
maps) and ``id2label.json`` against ``run.json`` (label maps of the default config are checked
with its rows, ``row_checks.check_label``)."""

from __future__ import annotations

from schemas.output_records import FileInfo, ShardStats
from transforms.shards.layout import ID2LABEL_FILE

from ..card import id2label
from .context import Validation, feature_diff
from .row_checks import check_label
from .shard_checks import BATCH_ROWS, check_rows, read_parquet


def check_segmentation_file(v: Validation, shard: str, info: FileInfo, stats: ShardStats) -> None:
    """The shard's segmentation-config file: its features, its ids (the marker's
    ``segmentation_ids``) and every label map."""
    from schemas.record import segmentation_features

    parquet = read_parquet(v, shard, info.path, segmentation_features())
    if parquet is None:
        return
    ids: list[str] = []
    count = 0
    rows = v.rows_checked(shard)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["id", "label"] if rows else ["id"]):
        labels = batch.column("label").to_pylist() if rows else [None] * batch.num_rows
        for i, (row_id, label) in enumerate(zip(batch.column("id").to_pylist(), labels)):
            if rows:
                check_label(v, shard, info.path, f"row {count + i}", (label or {}).get("bytes"))
            ids.append(row_id)
        count += batch.num_rows
    expected = list(stats.segmentation_ids or [])
    check_rows(v, shard, info.path, len(expected), expected, ids, count)


def check_id2label(v: Validation) -> None:
    """``id2label.json`` names background and the run's classes, in label order."""
    segmentation = (v.run.settings.get("segmentation") if v.run else None) or None
    if not segmentation or not v.run or not v.run.complete:
        return
    expected = id2label(segmentation)
    path = v.layout.path(ID2LABEL_FILE)
    if not v.layout.exists(path):
        v.add("", "id2label", f"no {ID2LABEL_FILE} for a run with {len(expected) - 1} classes", ID2LABEL_FILE)
        return
    try:
        found = v.layout.read_json(path)
    except ValueError as error:
        v.add("", "id2label", f"{ID2LABEL_FILE} is not JSON ({error})", ID2LABEL_FILE)
        return
    if found != expected:
        v.add("", "id2label", f"{ID2LABEL_FILE} differs from run.json's classes: {feature_diff(found, expected)}", ID2LABEL_FILE)

"""``--layout hf``: a Hugging Face dataset folder whose default config is the segmentation view.

::

    data/train-00000-of-00002.parquet       id, prompt, image, label, classes (≤100 rows a row
    data/validation-00000-of-00001.parquet  group, page index, zstd; features in the Arrow schema)
    id2label.json                           {"0": "background", "1": name, …}
    README.md                               configs, dataset_info.features, classes, how to train

``load_dataset(DIR)`` gives ``train`` (and ``validation``) with ``image``/``label`` Image features;
uploaded, transformers' ``run_semantic_segmentation.py`` trains on it unchanged.
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.shards.layout import CARD_FILE, DATA_DIR, ID2LABEL_FILE
from transforms.shards.sinks import ROW_GROUP_MAX_ROWS, ROW_GROUP_TARGET_BYTES

from .base import Layout
from .card import export_card
from .labels import CheckedPair, grey_png, rgb_png
from .plan import PlannedRow
from .source import SegmentationRow

ROWS_PER_SHARD = 500  # ~200 MB of 512 px images a file


def shard_paths(split: str, rows: int) -> list[str]:
    """``data/<split>-0000i-of-0000n.parquet`` for ``rows`` rows, ``ROWS_PER_SHARD`` a file at most."""
    count = math.ceil(rows / ROWS_PER_SHARD)
    return [f"{DATA_DIR}/{split}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]


class _SplitWriter:
    """One split's Parquet shards, written row group by row group as the rows come."""

    def __init__(self, layout: "HfLayout", split: str) -> None:
        self.layout = layout
        self.rows = layout.plan.count(split)
        self.paths = shard_paths(split, self.rows)
        self.written = 0
        self.shard = -1
        self.buffer: list[dict[str, Any]] = []
        self.buffered_bytes = 0
        self.stack = ExitStack()
        self.writer: pq.ParquetWriter | None = None
        self.bytes = 0

    def _end(self, shard: int) -> int:
        """Rows before the end of shard ``shard`` (shards share the rows evenly)."""
        return (shard + 1) * self.rows // len(self.paths)

    def add(self, record: dict[str, Any], size: int) -> None:
        if self.writer is None:
            self.shard += 1
            fh = self.stack.enter_context(self.layout.dest.writing(self.paths[self.shard]))
            self.writer = self.stack.enter_context(
                pq.ParquetWriter(fh, self.layout.schema, compression="zstd", write_page_index=True))
        self.buffer.append(record)
        self.buffered_bytes += size
        self.written += 1
        if len(self.buffer) >= ROW_GROUP_MAX_ROWS or self.buffered_bytes >= ROW_GROUP_TARGET_BYTES:
            self._flush()
        if self.written == self._end(self.shard):
            self._flush()
            self.stack.close()  # closes the Parquet writer, then renames the file into place
            self.bytes += self.layout.dest.layout.fs.size(self.layout.dest.layout.path(self.paths[self.shard]))
            self.writer = None

    def _flush(self) -> None:
        if self.buffer and self.writer is not None:
            table = pa.Table.from_pylist(self.buffer, schema=self.layout.schema)
            self.writer.write_table(table, row_group_size=len(self.buffer))
        self.buffer, self.buffered_bytes = [], 0

    def abort(self) -> None:
        error = RuntimeError("export aborted")
        self.stack.__exit__(type(error), error, None)  # the temporary file is removed, nothing renamed


class HfLayout(Layout):
    """Parquet shards per split, ``id2label.json`` and the card."""

    name = "hf"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.features = self.source.features
        self.schema = self.features.arrow_schema
        self.writers = {split: _SplitWriter(self, split) for split in self.plan.splits()}

    def paths(self) -> list[str]:
        return [p for w in self.writers.values() for p in w.paths] + [ID2LABEL_FILE, CARD_FILE]

    def write_row(self, row: SegmentationRow, pair: CheckedPair, planned: PlannedRow) -> None:
        image, label = rgb_png(pair), grey_png(pair)
        record = {"id": row.id, "prompt": row.prompt, "image": {"bytes": image, "path": None},
                  "label": {"bytes": label, "path": None}, "classes": row.classes}
        self.writers[planned.split].add(record, len(image) + len(label))

    def close(self) -> None:
        self.dest.write(ID2LABEL_FILE, (json.dumps(self.source.id2label, indent=2, ensure_ascii=False) + "\n").encode())
        info = self.source.info
        splits = [{"name": split, "num_bytes": w.bytes, "num_examples": w.rows} for split, w in self.writers.items()]
        details = {"rows": len(self.plan.rows), "k": len(self.source.classes), "image_size": info.image_size,
                   "fingerprint": info.fingerprint}
        text = export_card(self.features, splits, info.settings, details, self.class_table(),
                           self.plan.validation_fraction, self.repo_id)
        self.dest.write(CARD_FILE, text.encode("utf-8"))

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

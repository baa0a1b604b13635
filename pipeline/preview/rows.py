"""The first rows of an output for the gallery, read with the libraries that wrote them.

Parquet shards (``data/*.parquet``) are streamed with ``datasets`` in small Arrow batches, so only
the batches holding the first ``n`` rows are read and decoded; WebDataset shards (``wds/*.tar``)
go through ``webdataset``'s tar iterators and decoder on fsspec streams (local, ``gs://``,
``s3://`` alike). Either way a row has ``id``, ``prompt``, ``seed``, ``image`` (``{"bytes", "path"}``,
not decoded), ``tokens``, ``words``, ``truncated`` and ``token_maps`` as float32 ``(n, h, w)``
(uint8 maps dequantised with their scales, ``schemas.maps``); outputs of ``--concept-maps`` also
``concepts`` and ``concept_maps`` ``(len(concepts), h, w)`` (the gallery's concept view).
"""

from __future__ import annotations

import logging
from contextlib import closing
from collections.abc import Iterator
from itertools import islice
from typing import Any

import datasets
from webdataset.autodecode import Decoder
from webdataset.tariterators import group_by_keys, tar_file_expander

import pyarrow.parquet as pq

from schemas.maps import SCALE_COLUMNS, decode_maps, decode_token_maps, decoded_row
from schemas.record import WDS_CONCEPT_MAPS, WDS_IMAGE, WDS_MAPS, WDS_META
from transforms.shards.layout import DATA_DIR, WDS_DIR, OutputLayout

from ..errors import PreviewError

logger = logging.getLogger(__name__)

COLUMNS = ["id", "prompt", "seed", "image", "tokens", "token_maps", "words", "truncated"]
SCALE = SCALE_COLUMNS["token_maps"]  # read too where the maps are uint8
CONCEPTS = ["concepts", "concept_maps"]  # read too where the output has them
CONCEPT_SCALE = SCALE_COLUMNS["concept_maps"]
BATCH_ROWS = 16  # Arrow batch size: the most rows decoded beyond the ones asked for


def parquet_rows(layout: OutputLayout, batch_size: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """Rows of ``data/*.parquet`` in shard order, streamed ``batch_size`` rows at a time."""
    paths = layout.list(DATA_DIR, ".parquet")
    if not paths:
        return
    with layout.fs.open(paths[0], "rb") as fh:
        names = set(pq.read_schema(fh).names)
    columns = [*COLUMNS, *(c for c in (SCALE, *CONCEPTS, CONCEPT_SCALE) if c in names)]
    stream = datasets.load_dataset(
        "parquet",
        data_files=[layout.fs.unstrip_protocol(path) for path in paths],
        split="train",
        streaming=True,
        columns=columns,
        batch_size=batch_size,
        storage_options=layout.fs.storage_options,
    )
    stream = stream.cast_column("image", datasets.Image(decode=False)).with_format("arrow")
    for table in stream.iter(batch_size=batch_size):
        maps = {c: table.column(c) for c in ("token_maps", "concept_maps") if c in table.column_names}
        for i, row in enumerate(table.drop_columns(list(maps)).to_pylist()):
            row["token_maps"] = decode_maps(decode_token_maps(maps["token_maps"][i]), row.pop(SCALE, None))
            if "concept_maps" in maps and row.get("concepts") is not None:
                row["concept_maps"] = decode_maps(decode_token_maps(maps["concept_maps"][i]), row.pop(CONCEPT_SCALE, None))
            yield row


def _tar_streams(layout: OutputLayout, paths: list[str]) -> Iterator[dict[str, Any]]:
    """``webdataset`` sources: each shard opened through the output's filesystem, one at a time."""
    for path in paths:
        with layout.fs.open(path, "rb") as stream:
            yield {"url": path, "stream": stream}


def webdataset_rows(layout: OutputLayout) -> Iterator[dict[str, Any]]:
    """Rows of ``wds/*.tar`` in shard order (metadata JSON, PNG bytes, token maps ``.npy``)."""
    decode = Decoder([], only=[WDS_META, WDS_MAPS, WDS_CONCEPT_MAPS])
    files = tar_file_expander(_tar_streams(layout, layout.list(WDS_DIR, ".tar")))
    for sample in group_by_keys(files):
        sample = decode(sample)
        row = dict(sample[WDS_META])
        row["image"] = {"bytes": sample[WDS_IMAGE], "path": None}
        row["token_maps"] = sample[WDS_MAPS]
        if WDS_CONCEPT_MAPS in sample:
            row["concept_maps"] = sample[WDS_CONCEPT_MAPS]
        yield decoded_row(row)


def read_rows(output: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of an output (shard order), from Parquet or else WebDataset shards."""
    layout = OutputLayout(output)
    if not layout.exists(layout.base):
        raise PreviewError(f"{output}: no such folder")
    if layout.list(DATA_DIR, ".parquet"):
        source = parquet_rows(layout, batch_size=max(1, min(n, BATCH_ROWS)))
    else:
        source = webdataset_rows(layout)
    with closing(source):
        rows = list(islice(source, max(0, n)))
    if not rows:
        raise PreviewError(f"{output}: no data shards (data/*.parquet or wds/*.tar) with rows to preview")
    logger.debug("read %d rows of %s", len(rows), output)
    return rows

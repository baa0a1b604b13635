"""The dataset record format (single source of truth)."""

from .maps import decode_maps, row_maps
from .record import (
    COLUMN_DOCS,
    MAP_DTYPES,
    SCHEMA_VERSION,
    WDS_EXTENSIONS,
    Record,
    build_features,
    records_to_table,
    wds_sample,
)

__all__ = [
    "COLUMN_DOCS",
    "MAP_DTYPES",
    "SCHEMA_VERSION",
    "WDS_EXTENSIONS",
    "Record",
    "build_features",
    "decode_maps",
    "records_to_table",
    "row_maps",
    "wds_sample",
]

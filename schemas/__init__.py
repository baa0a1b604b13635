"""The dataset record format (single source of truth)."""

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
    "records_to_table",
    "wds_sample",
]

"""What ``validate`` reports: one ``Problem`` per finding, of a stable kind (a string callers may filter on).

Kinds: ``run_json``, ``card``, ``missing_shard``, ``incomplete``, ``stats``, ``missing_file``, ``size``,
``checksum``, ``unreadable``, ``schema``, ``row_count``, ``ids``, ``duplicate_id``, ``tokens``,
``map_shape``, ``map_dtype``, ``map_values``, ``image``, ``failures``, ``stray_file``; with classes also
``label`` (a label map) and ``id2label`` (``id2label.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

KINDS = (
    "run_json", "card", "missing_shard", "incomplete", "stats", "missing_file", "size", "checksum", "unreadable",
    "schema", "row_count", "ids", "duplicate_id", "tokens", "map_shape", "map_dtype", "map_values", "image",
    "failures", "stray_file", "label", "id2label",
)
# kinds that make a shard's files unusable: ``--repair`` deletes and regenerates the shard
SHARD_DAMAGE = frozenset(
    {"missing_shard", "stats", "missing_file", "size", "checksum", "unreadable", "schema", "row_count", "ids",
     "duplicate_id", "tokens", "map_shape", "map_dtype", "map_values", "image", "failures", "label"}
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an output: the shard (``""`` if dataset-wide), its kind, a message and
    the file concerned (relative to the output root, ``""`` if none)."""

    shard: str
    kind: str
    message: str
    file: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    def __str__(self) -> str:
        where = self.file or self.shard or "dataset"
        return f"{where}: [{self.kind}] {self.message}"


def damaged_shards(problems: Iterable[Problem]) -> set[str]:
    """Shards whose files must be deleted and regenerated to fix ``problems``."""
    return {p.shard for p in problems if p.shard and p.kind in SHARD_DAMAGE}

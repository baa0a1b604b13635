"""The state of one validation: the output, what its ``run.json`` records, the stats markers read,
the row ids seen and the problems found so far."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from schemas.output_records import RunInfo, ShardStats, ShardSummary, parse_shard_name
from transforms.shards.layout import OutputLayout

from .id_ledger import IdLedger
from .problems import Problem


@dataclass
class Validation:
    """What the checks share; each check reads it and adds problems."""

    layout: OutputLayout
    problems: list[Problem] = field(default_factory=list)
    run: RunInfo | None = None
    features: Any = None  # datasets.Features of run.json's geometry
    image_size: tuple[int, ...] | None = None
    map_size: tuple[int, ...] | None = None  # of the stored maps (the map grid, or --map-size)
    map_dtype: str = "float16"
    overlay: bool = False  # a run with the overlay columns
    formats: tuple[str, ...] = ("parquet",)
    num_classes: int = 0  # K of a run with classes (labels 0..K and 255)
    timestep_bins: int | None = None  # K of a run with --per-timestep (a timestep_maps column)
    concepts: bool = False  # a run with --concept-maps (concepts, concept_maps columns)
    run_grid: tuple[int, ...] | None = None  # the model's map grid (stored maps are resized with --map-size)
    expected: list[str] = field(default_factory=list)
    stats: dict[str, ShardSummary] = field(default_factory=dict)  # markers without their id lists
    ids: IdLedger = field(default_factory=IdLedger)
    sample: set[str] | None = None  # the shards whose rows are decoded and checked (None: every shard)

    def add(self, shard: str, kind: str, message: str, file: str = "") -> None:
        """Record a problem."""
        self.problems.append(Problem(shard, kind, message, file))

    def has(self, kind: str, shard: str | None = None) -> bool:
        """Whether a problem of ``kind`` (of ``shard``, if given) was found."""
        return any(p.kind == kind and (shard is None or p.shard == shard) for p in self.problems)

    def rel(self, full: str) -> str:
        """A filesystem path under the output root, relative to the root."""
        return self.layout.relative(full)

    def read_bytes(self, rel_path: str) -> bytes:
        """The bytes of a file, by root-relative path."""
        with self.layout.fs.open(self.layout.path(rel_path), "rb") as fh:
            return fh.read()

    def committed_files(self) -> set[str]:
        """Root-relative paths of every data file a stats marker lists."""
        return {info.path for stats in self.stats.values() for info in stats.files.values()}

    def note_ids(self, rel: str, ids: Iterable[str]) -> None:
        """Remember that the file ``rel`` holds rows with these ids."""
        self.ids.note(rel, ids)

    def rows_checked(self, shard: str) -> bool:
        """Whether this shard's rows are decoded and checked (``--sample`` checks some shards only)."""
        return self.sample is None or shard in self.sample

    def marker(self, shard: str) -> ShardStats:
        """A shard's full stats marker (with its ids), read again: ``stats`` keeps only the slim ones."""
        return ShardStats.from_dict(self.layout.read_json(self.layout.stats_file(shard)))


def shard_of(rel: str) -> str:
    """The shard a data file is named after (``""`` if its name is not a shard's)."""
    stem = posixpath.basename(rel).split(".", 1)[0]
    return stem if parse_shard_name(stem) is not None else ""


def feature_diff(found: Any, expected: Any) -> str:
    """The first few columns whose features differ, for a message."""
    names = sorted(set(found) | set(expected))
    diffs = [f"{n}: {found.get(n)!r} vs {expected.get(n)!r}" for n in names if found.get(n) != expected.get(n)]
    return "; ".join(diffs[:3]) or "column order differs"

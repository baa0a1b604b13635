"""What an export will write, decided before anything is: each row's split and file stem.

Built from the id column alone (``SegmentationSource.ids``), so that every file of the export is
known up front: the destination is checked against them (a user's file is never written over)
and recorded before the first write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ExportError
from .names import file_stem
from .splits import SPLITS, split_of


@dataclass(frozen=True)
class PlannedRow:
    """A row's id, its file stem and its split (``train`` or ``validation``)."""

    id: str
    stem: str
    split: str


@dataclass
class ExportPlan:
    """Every row of the export in source order, with its stem and split."""

    rows: list[PlannedRow]
    validation_fraction: float
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def build(cls, ids: Iterable[str], validation_fraction: float, output: str = "OUTPUT") -> "ExportPlan":
        """Plan ``ids``; ``ExportError`` for a repeated id or two ids with one stem."""
        rows: list[PlannedRow] = []
        by_stem: dict[str, str] = {}
        for row_id in ids:
            stem = file_stem(row_id)
            other = by_stem.get(stem)
            if other is not None:
                what = f"the id {row_id!r} is repeated" if other == row_id else f"ids {other!r} and {row_id!r} have one file name {stem!r}"
                raise ExportError(f"{output}: cannot export the segmentation config: {what}")
            by_stem[stem] = row_id
            rows.append(PlannedRow(row_id, stem, split_of(row_id, validation_fraction)))
        plan = cls(rows, validation_fraction)
        plan.counts.update(row.split for row in rows)
        return plan

    def count(self, split: str) -> int:
        """Rows of ``split``."""
        return self.counts.get(split, 0)

    def in_split(self, split: str) -> list[PlannedRow]:
        """The rows of ``split``, sorted by stem (the order of split lists)."""
        return sorted((row for row in self.rows if row.split == split), key=lambda row: row.stem)

    def splits(self) -> list[str]:
        """The splits that have rows, train first."""
        return [split for split in SPLITS if self.count(split)]

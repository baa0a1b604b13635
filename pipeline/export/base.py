"""What every export layout shares: the rows it is given, the files it will write, the class table.

A layout is told every file it will write up front (``paths``, from the plan), is given the rows
one at a time (``add``, with the checked image/label pair), and writes what depends on all rows at
the end (``close``). ``FileLayout`` is the common shape of the folder-of-files layouts (mmseg,
VOC): one image and one label file per row, split lists, ``ids.jsonl`` and a README.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import ClassVar

from ..card import PLACEHOLDER_REPO
from .destination import ExportDestination
from .labels import CheckedPair, voc_palette
from .plan import ExportPlan, PlannedRow
from .source import SegmentationRow, SegmentationSource
from .splits import TRAIN, VALIDATION

IDS_FILE = "ids.jsonl"  # one {"stem", "id", "split"} line per row: file stem -> row id
README = "README.md"


class Layout:
    """An export layout (subclasses: ``hf``, ``mmseg``, ``voc``)."""

    name: ClassVar[str]

    def __init__(self, source: SegmentationSource, plan: ExportPlan, dest: ExportDestination,
                 repo_id: str = PLACEHOLDER_REPO) -> None:
        self.source = source
        self.plan = plan
        self.dest = dest
        self.repo_id = repo_id  # the dataset's name in the hf card's load and train examples
        self.class_rows: Counter = Counter()  # class name -> rows naming it

    def paths(self) -> list[str]:
        """Every file this layout writes, relative to the destination."""
        raise NotImplementedError

    def add(self, row: SegmentationRow, pair: CheckedPair, planned: PlannedRow) -> None:
        """Write one row."""
        self.class_rows.update(set(row.classes))
        self.write_row(row, pair, planned)

    def write_row(self, row: SegmentationRow, pair: CheckedPair, planned: PlannedRow) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Write what depends on all rows (card, split lists)."""

    def abort(self) -> None:
        """Drop what is half written (after an error)."""

    @property
    def names(self) -> list[str]:
        """Class names by label: ``background`` first."""
        return list(self.source.id2label.values())

    def class_table(self, palette: bool = False) -> str:
        """A Markdown table of the labels: id, name, rows naming the class (and its colour)."""
        colours = voc_palette()
        head = "| id | class | rows |" + (" colour (RGB) |" if palette else "")
        lines = [head, "|---|---|---|" + ("---|" if palette else "")]
        for i, name in enumerate(self.names):
            rows = "—" if i == 0 else str(self.class_rows.get(name, 0))
            colour = f" `{colours[i]}` |" if palette else ""
            lines.append(f"| {i} | {name} | {rows} |{colour}")
        return "\n".join(lines)


class FileLayout(Layout):
    """One image file and one label file per row, named by the row's file stem."""

    split_names: ClassVar[dict[str, str]] = {TRAIN: "train", VALIDATION: "val"}

    def image_path(self, planned: PlannedRow) -> str:
        raise NotImplementedError

    def label_path(self, planned: PlannedRow) -> str:
        raise NotImplementedError

    def encode(self, pair: CheckedPair) -> tuple[bytes, bytes]:
        """The image and label files' bytes."""
        raise NotImplementedError

    def split_lists(self) -> dict[str, list[PlannedRow]]:
        """Split list files (path -> rows, one stem a line)."""
        raise NotImplementedError

    def extra_files(self) -> dict[str, str]:
        """Small text files written at the end (path -> text): README, class names."""
        raise NotImplementedError

    def paths(self) -> list[str]:
        rows = [p for planned in self.plan.rows for p in (self.image_path(planned), self.label_path(planned))]
        return rows + list(self.split_lists()) + [IDS_FILE] + list(self.extra_files())

    def write_row(self, row: SegmentationRow, pair: CheckedPair, planned: PlannedRow) -> None:
        image, label = self.encode(pair)
        self.dest.write(self.image_path(planned), image)
        self.dest.write(self.label_path(planned), label)

    def close(self) -> None:
        for path, rows in self.split_lists().items():
            self.dest.write(path, "".join(f"{row.stem}\n" for row in rows).encode("utf-8"))
        ordered = sorted(self.plan.rows, key=lambda row: row.stem)
        lines = (json.dumps({"stem": r.stem, "id": r.id, "split": self.split_names[r.split]}, ensure_ascii=False)
                 for r in ordered)
        self.dest.write(IDS_FILE, "".join(f"{line}\n" for line in lines).encode("utf-8"))
        for path, text in self.extra_files().items():
            self.dest.write(path, text.encode("utf-8"))

    def summary(self) -> str:
        """Rows per split, as the READMEs say it."""
        return ", ".join(f"{self.plan.count(split)} {self.split_names[split]}" for split in (TRAIN, VALIDATION))

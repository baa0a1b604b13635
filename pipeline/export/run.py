"""``export_output``: the segmentation config of an output as a training-ready folder.

Reads the id column first and plans every row's split and file (``plan``), checks and claims the
destination (``destination``), then streams the rows through the layout (``hf``, ``mmseg``,
``voc``), checking each label against its image (``labels.check_pair``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..card import PLACEHOLDER_REPO
from ..errors import ExportError
from .base import Layout
from .destination import ExportDestination
from .hf import HfLayout
from .labels import check_pair
from .mmseg import MmsegLayout
from .plan import ExportPlan
from .source import SegmentationSource
from .splits import TRAIN, VALIDATION
from .voc import VocLayout

logger = logging.getLogger(__name__)

LAYOUTS: dict[str, type[Layout]] = {"hf": HfLayout, "mmseg": MmsegLayout, "voc": VocLayout}
DEFAULT_LAYOUT = "hf"
DEFAULT_VALIDATION_FRACTION = 0.1
MAX_VALIDATION_FRACTION = 0.5
PROGRESS_EVERY = 500  # rows between progress lines


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: rows per split, where, as which layout, earlier files it removed."""

    output: str
    dest: str
    layout: str
    train: int
    validation: int
    removed: int = 0

    @property
    def rows(self) -> int:
        """Rows exported."""
        return self.train + self.validation

    def line(self) -> str:
        """``exported 123 rows (111 train, 12 validation) to DIR as mmseg``."""
        return f"exported {self.rows} rows ({self.train} train, {self.validation} validation) to {self.dest} as {self.layout}"


def export_output(
    output: str,
    dest: str,
    layout: str = DEFAULT_LAYOUT,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    progress_every: int = PROGRESS_EVERY,
    repo_id: str = PLACEHOLDER_REPO,
) -> ExportResult:
    """Export the segmentation config of ``output`` to the folder ``dest`` (local or fsspec URL)
    as ``layout``, ``validation_fraction`` of the rows (by id hash) in the validation split;
    ``repo_id`` names the dataset in the hf card's examples.

    ``dest`` must be new, empty or an earlier export (``destination``); a rerun replaces the
    earlier export's files. Every refusal is an ``ExportError`` (one line), raised before
    anything is written where it can be.
    """
    if layout not in LAYOUTS:
        raise ExportError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if not 0.0 <= validation_fraction <= MAX_VALIDATION_FRACTION:
        raise ExportError(f"--validation-fraction {validation_fraction!r}: expected a number in [0, {MAX_VALIDATION_FRACTION:g}]")
    source = SegmentationSource.open(output)
    destination = ExportDestination(dest)
    destination.open(source.layout)
    plan = ExportPlan.build(source.ids(), validation_fraction, output)
    writer = LAYOUTS[layout](source, plan, destination, repo_id)
    details = {"tool": "daam-datasets export", "source": output, "layout": layout, "rows": len(plan.rows),
               "validation_fraction": validation_fraction, "fingerprint": source.info.fingerprint}
    paths = writer.paths()
    destination.claim(paths, details)
    total = len(plan.rows)
    if not plan.count(TRAIN):
        logger.warning("export %s: all %d rows fell in the validation split; lower --validation-fraction", output, total)
    logger.info("export %s -> %s as %s: %d rows (%d train, %d validation), %d files", output, destination.layout.root,
                layout, total, plan.count(TRAIN), plan.count(VALIDATION), len(paths))
    try:
        done = 0
        for row, planned in zip(source.iter_rows(), plan.rows):
            if row.id != planned.id:
                raise ExportError(f"{output}: the segmentation config changed while it was exported; rerun")
            writer.add(row, check_pair(row.id, row.image, row.label, len(source.classes)), planned)
            done += 1
            if done % progress_every == 0 and done < total:
                logger.info("export %s: %d/%d rows", layout, done, total)
        if done != total:
            raise ExportError(f"{output}: the segmentation config changed while it was exported; rerun")
        writer.close()
        removed = destination.finish(details)
    except BaseException as error:
        writer.abort()
        if isinstance(error, OSError):
            raise ExportError(f"{destination.where}: the export failed ({error.strerror or error}); "
                              "fix the cause and rerun (it replaces only its own files)") from error
        raise
    return ExportResult(output, destination.layout.root, layout, plan.count(TRAIN), plan.count(VALIDATION), removed)

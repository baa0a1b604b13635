"""``daam-datasets export``: an output's segmentation config (``run --classes``) as a folder that
segmentation trainers read as it is.

Layouts: ``hf`` (a Hugging Face dataset whose default config is the segmentation view, for
transformers' ``run_semantic_segmentation.py``), ``mmseg`` (MMSegmentation's ``BaseSegDataset``)
and ``voc`` (PASCAL VOC). Rows are split train/validation by a hash of their id (``splits``) and
files are named by a safe stem of it (``names``); the destination follows the user-files rule of
``pipeline.ownership`` with its own record, ``.daam-export.json`` (``destination``).
"""

from .destination import EXPORT_RECORD
from .names import file_stem
from .run import (
    DEFAULT_LAYOUT,
    DEFAULT_VALIDATION_FRACTION,
    LAYOUTS,
    MAX_VALIDATION_FRACTION,
    ExportResult,
    export_output,
)
from .source import SegmentationSource, no_segmentation
from .splits import TRAIN, VALIDATION, split_of

__all__ = [
    "DEFAULT_LAYOUT",
    "DEFAULT_VALIDATION_FRACTION",
    "EXPORT_RECORD",
    "LAYOUTS",
    "MAX_VALIDATION_FRACTION",
    "TRAIN",
    "VALIDATION",
    "ExportResult",
    "SegmentationSource",
    "export_output",
    "file_stem",
    "no_segmentation",
    "split_of",
]

"""The segmentation config of an output, read in bounded memory (``pyarrow``, batch by batch).

``SegmentationSource.open`` checks, reading only small files, that ``OUTPUT`` is a finished
output of daam-datasets with a segmentation config (``run --classes``): ``run.json``,
``id2label.json`` (the same classes as ``run.json``'s ``settings.segmentation.classes``) and
``segmentation/<shard>.parquet`` with ``id``, ``prompt``, ``image``, ``label`` and ``classes``.
Each refusal is one ``ExportError`` line.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from datasets import Features, Image

from schemas.output_records import RecordError, RunInfo, parse_shard_name
from transforms.shards.layout import ID2LABEL_FILE, RUN_FILE, SEGMENTATION_DIR, OutputLayout

from ..errors import ExportError

logger = logging.getLogger(__name__)

COLUMNS = ("id", "prompt", "image", "label", "classes")
IMAGE_COLUMNS = ("image", "label")
BATCH_ROWS = 64  # rows decoded at a time (images of 512 px: ~30 MB)
BACKGROUND = "background"


@dataclass(frozen=True)
class SegmentationRow:
    """One row of the segmentation config: PNG bytes of image and label, the classes it names."""

    id: str
    prompt: str
    image: bytes | None
    label: bytes | None
    classes: list[str]


def no_segmentation(output: str) -> ExportError:
    """The refusal of an output made without ``--classes``."""
    return ExportError(f"{output} has no segmentation config: run with --classes")


def _read_json(layout: OutputLayout, name: str, output: str) -> Any:
    try:
        return layout.read_json(layout.path(name))
    except (OSError, ValueError) as error:  # UnicodeDecodeError, JSONDecodeError
        raise ExportError(f"{output}: cannot read {name} ({error})") from None


def _run_info(layout: OutputLayout, output: str) -> RunInfo:
    """``run.json`` of a finished output."""
    if not layout.fs.exists(layout.base):
        raise ExportError(f"{output}: no such output folder")
    if not layout.fs.isdir(layout.base):
        raise ExportError(f"{output}: is a file, not an output folder")
    if not layout.exists(layout.path(RUN_FILE)):
        raise ExportError(f"{output}: not an output of daam-datasets (no {RUN_FILE})")
    try:
        info = RunInfo.from_dict(_read_json(layout, RUN_FILE, output))
    except RecordError as error:
        raise ExportError(f"{output}: not an output of daam-datasets ({error})") from None
    return info


def _classes(layout: OutputLayout, info: RunInfo, output: str) -> tuple[str, ...]:
    """Names of labels 1..K from ``id2label.json``, checked against ``run.json``."""
    recorded = (info.settings.get("segmentation") or {}).get("classes")
    has_files = layout.exists(layout.path(ID2LABEL_FILE)) or layout.exists(layout.path(SEGMENTATION_DIR))
    if recorded is None and not has_files:
        raise no_segmentation(output)
    if not info.complete:
        raise ExportError(f"{output}: the run has not finished ({RUN_FILE} status {info.status!r}); "
                          "rerun the same `daam-datasets run` command to finish it")
    if not layout.exists(layout.path(ID2LABEL_FILE)):
        raise ExportError(f"{output}: the segmentation config has no {ID2LABEL_FILE}; "
                          f"`daam-datasets validate {output} --repair` or rerun the run")
    id2label = _read_json(layout, ID2LABEL_FILE, output)
    keys = [str(i) for i in range(len(id2label))] if isinstance(id2label, dict) else []
    if (not keys or set(id2label) != set(keys) or id2label["0"] != BACKGROUND
            or not all(isinstance(v, str) and v for v in id2label.values())):
        raise ExportError(f"{output}: {ID2LABEL_FILE} is not a label map "
                          f'{{"0": "{BACKGROUND}", "1": name, …}} with the ids 0..K')
    classes = tuple(id2label[k] for k in keys[1:])
    if recorded is not None and list(recorded) != list(classes):
        raise ExportError(f"{output}: {ID2LABEL_FILE} and {RUN_FILE} list different classes")
    if not classes:
        raise ExportError(f"{output}: {ID2LABEL_FILE} lists no class")
    return classes


def _shard_files(layout: OutputLayout, info: RunInfo) -> list[str]:
    """The segmentation config's Parquet files of this run's shard plan."""
    files = []
    for full in layout.list(SEGMENTATION_DIR, ".parquet"):
        parsed = parse_shard_name(posixpath.basename(full)[: -len(".parquet")])
        if parsed is not None and parsed[1] == info.shards:
            files.append(full)
        else:
            logger.warning("%s: not a segmentation shard of this run, not exported", layout.relative(full))
    return files


@dataclass
class SegmentationSource:
    """A finished output's segmentation config: where it is, its classes, files, features and rows."""

    output: str
    layout: OutputLayout
    info: RunInfo
    classes: tuple[str, ...]
    files: list[str]
    features: Features
    rows: int

    @classmethod
    def open(cls, output: str) -> "SegmentationSource":
        """Check ``output`` and read what is known of its segmentation config without its rows."""
        layout = OutputLayout(output)
        info = _run_info(layout, output)
        classes = _classes(layout, info, output)
        files = _shard_files(layout, info)
        features: Features | None = None
        rows = 0
        for full in files:
            with cls._parquet(layout, full, output) as parquet:
                rows += parquet.metadata.num_rows
                features = features or cls._features(parquet, layout.relative(full), output)
        if not rows or features is None:
            raise ExportError(f"{output}: the segmentation config has no rows (no prompt names one of its "
                              f"{len(classes)} classes)")
        return cls(output, layout, info, classes, files, features, rows)

    @staticmethod
    @contextmanager
    def _parquet(layout: OutputLayout, full: str, output: str) -> Iterator[pq.ParquetFile]:
        try:
            with layout.fs.open(full, "rb") as fh:
                yield pq.ParquetFile(fh)
        except OSError as error:  # pyarrow's ArrowInvalid is a ValueError, raised for damaged files
            raise ExportError(f"{output}: cannot read {layout.relative(full)} ({error})") from None
        except ValueError as error:
            raise ExportError(f"{output}: {layout.relative(full)} is not a readable Parquet file ({error}); "
                              f"`daam-datasets validate {output}` lists what is damaged") from None

    @staticmethod
    def _features(parquet: pq.ParquetFile, rel: str, output: str) -> Features:
        """The config's features (``id``, ``prompt``, ``image``, ``label``, ``classes``) from the file's schema."""
        features = Features.from_arrow_schema(parquet.schema_arrow)
        missing = [c for c in COLUMNS if c not in features]
        if missing:
            raise ExportError(f"{output}: {rel} lacks the columns {', '.join(missing)} of the segmentation config")
        if not all(isinstance(features[c], Image) for c in IMAGE_COLUMNS):
            raise ExportError(f"{output}: {rel}: image and label must be Image features")
        return Features({c: features[c] for c in COLUMNS})

    @property
    def id2label(self) -> dict[str, str]:
        """``{"0": "background", "1": name1, …}`` as ``id2label.json`` has it."""
        return {str(i): name for i, name in enumerate((BACKGROUND, *self.classes))}

    def _batches(self, columns: list[str]) -> Iterator[dict[str, list]]:
        for full in self.files:
            with self._parquet(self.layout, full, self.output) as parquet:
                try:
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                        yield batch.to_pydict()
                except ValueError as error:  # ArrowInvalid: a damaged page
                    raise ExportError(f"{self.output}: {self.layout.relative(full)} is damaged ({error})") from None

    def ids(self) -> Iterator[str]:
        """Every row's id, in file order (the id column only)."""
        for batch in self._batches(["id"]):
            yield from batch["id"]

    def iter_rows(self) -> Iterator[SegmentationRow]:
        """Every row, in the order of ``ids``, ``BATCH_ROWS`` decoded at a time."""
        for batch in self._batches(list(COLUMNS)):
            for i, row_id in enumerate(batch["id"]):
                image, label = batch["image"][i] or {}, batch["label"][i] or {}
                yield SegmentationRow(row_id, batch["prompt"][i], image.get("bytes"), label.get("bytes"),
                                      list(batch["classes"][i] or []))

"""The output folder's own records, typed: shard names, the shard stats marker, one failure record
shape, and the run summary (``run.json``). Everything that reads or writes these files goes
through these classes; JSON key order and spelling are part of the on-disk contract."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

SPLIT = "train"
SHARD_NAME = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})$")


def shard_name(index: int, count: int, split: str = SPLIT) -> str:
    """``train-00003-of-00016``: the stem of every file of shard ``index`` of ``count`` (the index
    as wide as the count beyond 99,999 shards, so names sort in shard order)."""
    width = max(5, len(str(count)))
    return f"{split}-{index:0{width}d}-of-{count:0{width}d}"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(index, count)`` of a shard name, ``None`` if ``name`` is not one."""
    match = SHARD_NAME.match(name)
    return (int(match["index"]), int(match["count"])) if match else None


class RecordError(ValueError):
    """A record file that does not have the fields its class needs."""


def _from_mapping(cls: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f"{what} is not a JSON object")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise RecordError(f"{what} lacks {', '.join(missing)}")
    return cls(**{k: v for k, v in data.items() if k in names})



@dataclass
class FileInfo:
    """A committed data file of a shard: path relative to the output root, size, sha256."""

    path: str
    bytes: int
    sha256: str


@dataclass
class ShardStats:
    """A shard's commit marker (``_stats/<shard>.json``), written last: the shard is done when it exists."""

    shard: str
    index: int
    count: int
    prompts: int
    rows: int
    failed: int
    ids: list[str]
    failed_ids: list[str]
    files: dict[str, FileInfo]
    seconds: float
    schema_version: str
    fingerprint: str | None = None
    segmentation_ids: list[str] | None = None  # rows of the segmentation config (runs with classes)

    def to_dict(self) -> dict[str, Any]:
        """The marker's JSON object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ShardStats":
        """Parse a marker (``RecordError`` if it lacks a field)."""
        stats = _from_mapping(cls, data, "stats marker")
        if not isinstance(stats.files, dict) or not isinstance(stats.ids, list):
            raise RecordError("stats marker: 'files' must be an object and 'ids' a list")
        try:
            stats.files = {fmt: info if isinstance(info, FileInfo) else FileInfo(**info) for fmt, info in stats.files.items()}
        except TypeError as error:
            raise RecordError(f"stats marker: bad file entry ({error})") from None
        return stats

    def file_bytes(self, fmt: str) -> int:
        """Bytes of this shard's file in format ``fmt`` (0 if it has none)."""
        info = self.files.get(fmt)
        return info.bytes if info else 0

    def summary(self) -> "ShardSummary":
        """The marker without its id lists: what run-wide figures need, small at any shard size."""
        return ShardSummary(self.shard, self.index, self.count, self.prompts, self.rows, self.failed, self.files,
                            self.fingerprint, len(self.segmentation_ids or []))


@dataclass(frozen=True)
class ShardSummary:
    """A committed shard's counts and files (``ShardStats.summary``): a run of 10 M rows keeps one
    of these per shard, not 10 M ids."""

    shard: str
    index: int
    count: int
    prompts: int
    rows: int
    failed: int
    files: dict[str, FileInfo]
    fingerprint: str | None
    segmentation_rows: int

    file_bytes = ShardStats.file_bytes


@dataclass
class FailureRecord:
    """A corpus row or prompt that produced no dataset row, and why (one JSON line in ``_failures/``).

    ``stage`` is ``read`` for corpus rows that could not become prompts (``source`` and ``line``
    say where; ``raw`` holds the row's text), else where generation failed (``shard`` says which).
    """

    id: str | None
    stage: str
    message: str
    prompt: str = ""
    shard: str = ""
    source: str = ""
    line: int | None = None
    raw: str = ""

    def to_json(self) -> str:
        """One JSON line (keys sorted)."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "FailureRecord":
        """Parse one JSON line (``RecordError`` or ``ValueError`` if it is not a record)."""
        return _from_mapping(cls, json.loads(line), "failure record")


def failure_lines(records: list[FailureRecord]) -> bytes:
    """A failures file's bytes: one JSON line per record."""
    return "".join(r.to_json() + "\n" for r in records).encode("utf-8", "surrogatepass")


@dataclass
class RunInfo:
    """``run.json``: settings, versions, geometry, fingerprint and, once complete, the summary."""

    fingerprint: str
    schema_version: str
    settings: dict[str, Any]
    versions: dict[str, str]
    image_size: list[int]
    map_size: list[int]
    shards: int
    status: str = "running"
    summary: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None  # the trace selection resolved for the model (transforms.trace_selection)

    @property
    def complete(self) -> bool:
        """Whether the run that wrote this finished."""
        return self.status == "complete"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (no ``summary`` key until the run completes, no ``trace`` when unknown)."""
        data = asdict(self)
        for key in ("summary", "trace"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "RunInfo":
        """Parse ``run.json`` (``RecordError`` if it lacks a field)."""
        return _from_mapping(cls, data, "run.json")


@dataclass
class PreviewRecord:
    """``.daam-preview.json``: the files ``daam-datasets preview`` wrote (paths relative to the output
    root), written before them, so that a later preview or ``run --overwrite`` removes exactly those."""

    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "PreviewRecord":
        """Parse the record (``RecordError`` if it is not a list of paths)."""
        record = _from_mapping(cls, data, "preview record")
        if not isinstance(record.files, list) or not all(isinstance(p, str) for p in record.files):
            raise RecordError("preview record: 'files' must be a list of paths")
        return record

"""What a publish does: the files to send, the destination's files, and the commits between them.

Data shards go in batched commits first, other files (preview, failure records) next, the card and
run summary last (together with deleting data files of an earlier version that this output no
longer has), so the card never announces rows whose shards are not there yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from transforms.shards.layout import CARD_FILE, DATA_DIR, PREVIEW_DIR, RUN_FILE, SEGMENTATION_DIR, WDS_DIR

from ..export import DEFAULT_VALIDATION_FRACTION

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILES = 50
DEFAULT_MAX_BYTES = 4 * 1024**3
SMALL_FILES_PER_COMMIT = 1000  # preview assets, failure records: small, many
DATA_PREFIXES = (DATA_DIR + "/", WDS_DIR + "/", SEGMENTATION_DIR + "/")
LAST_FILES = {CARD_FILE: "dataset card", RUN_FILE: "run summary"}  # committed last, in this order
DEFAULT_CONFIG, SEGMENTATION_CONFIG = "default", "segmentation"
CONFIGS = (DEFAULT_CONFIG, SEGMENTATION_CONFIG)


@dataclass(frozen=True)
class PublishOptions:
    """What to publish and how: the keyword arguments of ``publish_to_hub`` and ``publish_to_path``.

    ``config``: ``default`` publishes the output as it is; ``segmentation`` publishes its
    segmentation view as a dataset of its own (the ``hf`` export, whose default config it is),
    ``validation_fraction`` of its rows in a validation split. ``validate`` replaces
    ``validate_output`` (tests); ``log`` receives the plan and progress lines; ``label`` names the
    published source in them (default: its path).
    """

    include_failures: bool = False
    include_preview: bool = True
    dry_run: bool = False
    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES
    config: str = DEFAULT_CONFIG
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    validate: Callable[[str], list] | None = None
    log: Callable[[str], None] = print
    label: str | None = None

    def __post_init__(self) -> None:
        if self.config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}, got {self.config!r}")

    def to_kwargs(self) -> dict[str, Any]:
        """The options as the keyword arguments they were given as."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class LocalFile:
    """A file to publish: its repo path, where it is read from (``full`` on the output's file
    system, or ``data`` when generated, e.g. the card), its size and sha256."""

    path: str
    full: str
    size: int
    sha256: str
    data: bytes | None = None


@dataclass
class RemoteFile:
    """A file at the destination: size and whatever content ids are known."""

    path: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None


@dataclass
class Commit:
    """One commit (or, for ``--to``, one copy batch)."""

    message: str
    adds: list[LocalFile] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes this commit sends."""
        return total_bytes(self.adds)


@dataclass
class PublishPlan:
    """Files to send, files already there, stale files to delete, and the commits."""

    source: str
    target: str
    upload: list[LocalFile]
    unchanged: list[LocalFile]
    delete: list[str]
    commits: list[Commit]
    notes: list[str] = field(default_factory=list)

    def counts(self, verb: str = "upload") -> str:
        """``N files to <verb>, N unchanged, N to delete``."""
        return f"{len(self.upload)} files to {verb}, {len(self.unchanged)} unchanged, {len(self.delete)} to delete"

    def describe(self) -> str:
        """The plan as text (what ``--dry-run`` prints)."""
        lines = [f"publish {self.source} -> {self.target}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += _file_lines("upload", self.upload, "")
        lines += _file_lines("same", self.unchanged, "  (already there, same sha256)")
        lines += [f"  delete  {path:<48} {'':>10}  (not in this output)" for path in self.delete]
        n = len(self.commits)
        lines.append(
            f"{len(self.upload)} files to upload ({human_bytes(total_bytes(self.upload))}), "
            f"{len(self.unchanged)} unchanged, {len(self.delete)} to delete, in {n} commit{'s' if n != 1 else ''}"
            + (":" if self.commits else " (up to date)")
        )
        for i, c in enumerate(self.commits, 1):
            parts = [f"{len(c.adds)} files, {human_bytes(c.bytes)}"]
            if c.deletes:
                parts.append(f"{len(c.deletes)} deletions")
            lines.append(f"  commit {i}/{n}: {c.message!r} ({'; '.join(parts)})")
        return "\n".join(lines)


@dataclass
class PublishResult:
    """What was done: the plan, the commits made (URLs or descriptions) and whether it was a dry run."""

    plan: PublishPlan
    commits: list[str]
    dry_run: bool

    def line(self) -> str:
        """The one line the command prints at the end."""
        if self.dry_run:
            return "dry run: nothing was sent"
        plan = self.plan
        return (f"published {len(plan.upload)} files ({human_bytes(total_bytes(plan.upload))}) in "
                f"{len(self.commits)} commits, {len(plan.unchanged)} unchanged, "
                f"{len(plan.delete)} deleted -> {plan.target}")


def total_bytes(files: list[LocalFile]) -> int:
    """Sum of the files' sizes."""
    return sum(f.size for f in files)


def human_bytes(size: float) -> str:
    """``123 B``, ``4.5 KiB`` … ``1.2 GiB`` (GiB is the largest unit)."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _file_lines(verb: str, files: list[LocalFile], note: str) -> list[str]:
    """One line per data shard and top-level file; one line per other folder (preview/: hundreds)."""
    lines: list[str] = []
    groups: dict[str, list[LocalFile]] = {}
    for f in files:
        top = f.path.split("/", 1)[0]
        if "/" in f.path and not f.path.startswith(DATA_PREFIXES):
            groups.setdefault(top, []).append(f)
        else:
            lines.append(f"  {verb:<7} {f.path:<48} {human_bytes(f.size):>10}{note}")
    for top, members in sorted(groups.items()):
        name = f"{top}/ ({len(members)} files)"
        lines.append(f"  {verb:<7} {name:<48} {human_bytes(total_bytes(members)):>10}{note}")
    return lines


def _batches(files: list[LocalFile], max_files: int, max_bytes: int) -> list[list[LocalFile]]:
    """Consecutive batches of at most ``max_files`` files and ``max_bytes`` (a bigger file goes alone)."""
    batches: list[list[LocalFile]] = []
    for f in files:
        if not batches or len(batches[-1]) >= max_files or total_bytes(batches[-1]) + f.size > max_bytes:
            batches.append([])
        batches[-1].append(f)
    return batches


def plan_commits(
    upload: list[LocalFile],
    delete: list[str],
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Commit]:
    """Batch the uploads: data shards first (≤ ``max_files`` files and ≤ ``max_bytes`` per commit),
    then other files (preview, failure records; ≤ ``SMALL_FILES_PER_COMMIT`` files and ≤
    ``max_bytes``), then card + run summary + deletions last."""
    data = [f for f in upload if f.path.startswith(DATA_PREFIXES)]
    final = [f for f in upload if f.path in LAST_FILES]
    other = [f for f in upload if not f.path.startswith(DATA_PREFIXES) and f.path not in LAST_FILES]
    commits: list[Commit] = []
    for kind, group, limit in (("data shards", data, max_files), ("files", other, SMALL_FILES_PER_COMMIT)):
        batches = _batches(group, limit, max_bytes)
        start = 0
        for batch in batches:
            preview = kind == "files" and all(b.path.startswith(PREVIEW_DIR + "/") for b in batch)
            span = f"{start + 1}-{start + len(batch)} of {len(group)}" if len(batches) > 1 else f"{len(batch)}"
            commits.append(Commit(f"Upload {'preview' if preview else kind} ({span})", batch))
            start += len(batch)
    if final or delete:
        sent = {f.path for f in final}
        label = " and ".join(name for path, name in LAST_FILES.items() if path in sent)
        message = f"Update {label}" if label else "Remove files of an earlier version"
        if label and delete:
            message += f"; remove {len(delete)} files of an earlier version"
        commits.append(Commit(message, final, list(delete)))
    return commits


def make_plan(
    source: str,
    target: str,
    local: list[LocalFile],
    remote: dict[str, RemoteFile],
    same: Callable[[LocalFile, RemoteFile], bool],
    prefixes: tuple[str, ...],
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PublishPlan:
    """Compare the output's ``local`` files with the destination's ``remote`` ones (``same`` says
    whether a file is already there) and batch what differs; destination files under ``prefixes``
    that the output lacks are deleted."""
    upload: list[LocalFile] = []
    unchanged: list[LocalFile] = []
    for f in local:
        there = remote.get(f.path)
        (unchanged if there is not None and same(f, there) else upload).append(f)
    mine = {f.path for f in local}
    delete = sorted(p for p in remote if p.startswith(prefixes) and p not in mine)
    plan = PublishPlan(source, target, upload, unchanged, delete, plan_commits(upload, delete, max_files, max_bytes))
    logger.debug("plan %s -> %s: %s, %d commits", source, target, plan.counts(), len(plan.commits))
    return plan

"""What daam-datasets may change in a folder: only the files it can prove it wrote.

**An output** (``run --output``, ``validate --repair``, ``preview``) must be a new path, an empty
folder, or an earlier output of ours, recognised by its own records: a ``run.json`` that parses as
``RunInfo`` or a ``_stats/`` marker that parses as ``ShardStats``. Ours in an output are:

- by name, in any folder (bookkeeping that nothing else names so): ``.lock``, ``.tmp/…``,
  ``.daam-preview.json``, ``_stats/<shard>.json``, ``_manifest/<shard>.jsonl``,
  ``_failures/<shard>.jsonl`` and ``_failures/read.jsonl``, where ``<shard>`` is a shard name
  (``train-00003-of-00016``, ``schemas.output_records.SHARD_NAME``): a run that crashed before
  writing ``run.json`` leaves only these, and a rerun must still be able to resume;
- in a recognised output: ``run.json``, the card ``README.md``, the data files (named as a shard's:
  ``data/<shard>.parquet``, ``wds/<shard>.tar``, which covers every file a marker lists and a
  commit that crashed before its marker; ``segmentation/<shard>.parquet`` and ``id2label.json`` of a
  run with classes), and the gallery's files: those ``.daam-preview.json``
  lists, or, for a preview made before that record existed, those named as the gallery names them.

Every other file is a user's. A folder holding any is refused before anything is read or written,
unless it is recognised as ours: an earlier output that a user later added files to is used as it
is, and those files are never overwritten, moved or deleted (``--overwrite`` removes only ours and
logs what it removed and what it kept).

**A publish destination** (``publish --to``) must be a new path, an empty folder or an earlier
destination: ``.daam-publish.json`` there lists what publish copied, and only those files (and its
own ``.tmp/``) are ever replaced or deleted; a copy that would land on any other file is refused.
``export --to`` follows the same rule with ``.daam-export.json`` (``require_destination``).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from schemas.output_records import PreviewRecord, RunInfo, ShardStats, parse_shard_name
from transforms.shards.layout import (
    CARD_FILE,
    FAILURES_DIR,
    FORMAT_DIRS,
    ID2LABEL_FILE,
    LOCK_FILE,
    MANIFEST_DIR,
    PREVIEW_DIR,
    RUN_FILE,
    STATS_DIR,
    TMP_DIR,
    OutputLayout,
)

from .errors import OutputError, PublishError

logger = logging.getLogger(__name__)

PREVIEW_RECORD = ".daam-preview.json"
READ_FAILURES = "read.jsonl"
MAX_NAMED = 3  # foreign files a refusal names
SCAN_LIMIT = 1000  # a refusal stops looking after this many foreign files (``--output ~``)
NOT_OURS = "holds files daam-datasets did not write"
NEW_FOLDER = "choose a new or empty folder"
BOOKKEEPING_NAMES = {STATS_DIR: ".json", MANIFEST_DIR: ".jsonl", FAILURES_DIR: ".jsonl"}
DATA_NAMES = {folder: f".{ext}" for folder, ext in FORMAT_DIRS.values()}
GALLERY_NAMES = re.compile(rf"^{PREVIEW_DIR}/(index\.html|grid\.png|assets/\d{{3}}/(image|w\d{{2}})\.jpg)$")
KINDS = {
    **{folder: "data file" for folder in DATA_NAMES}, STATS_DIR: "stats marker", FAILURES_DIR: "failure record",
    MANIFEST_DIR: "manifest", PREVIEW_DIR: "preview file", PREVIEW_RECORD: "preview record",
    TMP_DIR: "temporary file", RUN_FILE: "run record", CARD_FILE: "dataset card", LOCK_FILE: "lock file",
}


@dataclass
class Records:
    """What an output's own records say: whether it is ours and which gallery files it wrote
    (``None``: no readable preview record)."""

    recognised: bool
    preview: set[str] | None


@dataclass
class Scan:
    """An output's files, split: ours (by the rules above) and a user's (``foreign``, sorted)."""

    records: Records
    ours: set[str]
    foreign: list[str]


@dataclass
class Removal:
    """What ``remove_ours`` deleted (counts by kind) and which files of a user it left."""

    removed: Counter = field(default_factory=Counter)
    kept: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Files deleted."""
        return sum(self.removed.values())

    def line(self, what: str) -> str:
        """``removed 14 files of <what> (4 data files, …); kept 2 files daam-datasets did not write (…)``."""
        if not self.total:
            text = f"nothing of {what} to remove"
        else:
            kinds = ", ".join(_count(n, kind) for kind, n in sorted(self.removed.items(), key=lambda kv: (-kv[1], kv[0])))
            text = f"removed {_count(self.total, 'file')} of {what} ({kinds})"
        if self.kept:
            text += f"; kept {_count(len(self.kept), 'file')} daam-datasets did not write ({_named(self.kept)})"
        return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _named(files: list[str]) -> str:
    """``README.md, notes.txt, data/mine.csv, … 12 in all``: a few of ``files``, top level first
    (``1000 or more`` when a scan stopped at ``SCAN_LIMIT``)."""
    shown = sorted(files, key=lambda p: (p.count("/"), p))[:MAX_NAMED]
    if len(files) <= MAX_NAMED:
        return ", ".join(shown)
    total = f"{len(files)} or more" if len(files) >= SCAN_LIMIT else str(len(files))
    return f"{', '.join(shown)}, … {total} in all"


def refusal(where: str, files: list[str], advice: str, what: str = NOT_OURS) -> str:
    """The one line of a refusal: ``<where>: holds files daam-datasets did not write (a, b, … N in all); <advice>``."""
    return f"{where}: {what} ({_named(files)}); {advice}"


def files_under(layout: OutputLayout) -> Iterator[str]:
    """Root-relative paths of every file under the root, hidden ones too, folder by folder (lazily,
    so that a refusal stops early in a big folder); nothing when the root does not exist."""
    base = layout.base.rstrip("/") or "/"
    if not layout.fs.exists(base):
        return
    for root, _, names in layout.fs.walk(base):
        for name in sorted(names):
            yield layout.relative(posixpath.join(root, name))


def _shard_named(rel: str, folders: dict[str, str]) -> bool:
    """Whether ``rel`` is ``<folder>/<shard name><suffix>`` for one of ``folders`` (folder → suffix)."""
    folder, _, name = rel.partition("/")
    suffix = folders.get(folder)
    return bool(suffix) and name.endswith(suffix) and parse_shard_name(name[: -len(suffix)]) is not None


def _parses(layout: OutputLayout, path: str, parse: Callable[[object], object]) -> object | None:
    """``parse(json)`` of the file at ``path``, ``None`` if it is absent or not such a record."""
    try:
        return parse(layout.read_json(path)) if layout.exists(path) else None
    except (OSError, ValueError):  # RecordError and UnicodeDecodeError are ValueErrors
        return None


def read_records(layout: OutputLayout) -> Records:
    """Whether the folder is an output of ours (``run.json`` or a marker parses) and its preview record."""
    recognised = _parses(layout, layout.path(RUN_FILE), RunInfo.from_dict) is not None
    if not recognised:
        recognised = any(_parses(layout, p, ShardStats.from_dict) is not None for p in layout.list(STATS_DIR, ".json"))
    record = _parses(layout, layout.path(PREVIEW_RECORD), PreviewRecord.from_dict)
    return Records(recognised, set(record.files) if isinstance(record, PreviewRecord) else None)


def owned(rel: str, records: Records) -> bool:
    """Whether the file at ``rel`` (root-relative) is ours, by the rules of this module."""
    top = rel.split("/", 1)[0]
    if rel in (LOCK_FILE, PREVIEW_RECORD, f"{FAILURES_DIR}/{READ_FAILURES}") or top == TMP_DIR:
        return True
    if _shard_named(rel, BOOKKEEPING_NAMES):
        return True
    if not records.recognised:
        return False
    if rel in (RUN_FILE, CARD_FILE, ID2LABEL_FILE) or _shard_named(rel, DATA_NAMES):
        return True
    if top != PREVIEW_DIR:
        return False
    return rel in records.preview if records.preview is not None else bool(GALLERY_NAMES.match(rel))


def _split(layout: OutputLayout, is_ours: Callable[[str], bool], limit: int | None) -> tuple[set[str], list[str]]:
    """The folder's files: ours and (sorted) a user's, stopping after ``limit`` of the user's."""
    mine: set[str] = set()
    foreign: list[str] = []
    for rel in files_under(layout):
        if is_ours(rel):
            mine.add(rel)
            continue
        foreign.append(rel)
        if limit is not None and len(foreign) >= limit:
            break
    return mine, sorted(foreign)


def _left_untouched(where: str, files: list[str], writer: str) -> None:
    """Log the user's files that a command found and leaves alone."""
    if files:
        logger.info("%s: %s %s, left untouched (%s)", where, _count(len(files), "file"), writer, _named(files))


def scan(layout: OutputLayout, limit: int | None = None) -> Scan:
    """Every file of the output, ours or a user's (stops after ``limit`` foreign files)."""
    records = read_records(layout)
    return Scan(records, *_split(layout, lambda rel: owned(rel, records), limit))


def ours(layout: OutputLayout) -> set[str]:
    """Root-relative paths of the output's files that daam-datasets wrote."""
    return scan(layout).ours


def foreign_files(layout: OutputLayout) -> list[str]:
    """Root-relative paths of the output's files that daam-datasets did not write, sorted."""
    return scan(layout).foreign


def require_usable_output(layout: OutputLayout, label: str = "--output", advice: str = NEW_FOLDER) -> Scan:
    """Refuse (``OutputError``, one line) a file, or a folder with files of a user's that is not an
    output of ours; reads only. A user's files in an output of ours are logged and left alone."""
    where = f"{label} {layout.root}"
    if layout.fs.exists(layout.base) and not layout.fs.isdir(layout.base):
        raise OutputError(f"{where}: is a file, not a folder")
    found = scan(layout, SCAN_LIMIT)
    if found.foreign and not found.records.recognised:
        raise OutputError(refusal(where, found.foreign, advice))
    _left_untouched(where, found.foreign, "daam-datasets did not write")
    return found


def remove_ours(layout: OutputLayout, paths: Iterable[str] | None = None, found: Scan | None = None) -> Removal:
    """Delete the files of ``paths`` (default: all) that are ours, never ``.lock`` (the caller holds
    it), then the folders they leave empty; what was removed, and the user's files kept."""
    found = found or scan(layout)
    chosen = found.ours if paths is None else set(paths)
    removal = Removal(kept=list(found.foreign) if paths is None else sorted(chosen & set(found.foreign)))
    removed = sorted(p for p in chosen & found.ours if p != LOCK_FILE)
    for rel in removed:
        layout.remove(layout.path(rel))
        removal.removed[KINDS.get(rel.split("/", 1)[0], "file")] += 1
    prune_folders(layout, removed)
    return removal


def prune_folders(layout: OutputLayout, removed: list[str]) -> None:
    """Remove the folders of ``removed`` files (deepest first) that are now empty."""
    folders: set[str] = set()
    for rel in removed:
        folder = posixpath.dirname(rel)
        while folder:
            folders.add(folder)
            folder = posixpath.dirname(folder)
    for folder in sorted(folders, key=lambda f: -f.count("/")):
        full = layout.path(folder)
        try:
            if layout.fs.isdir(full) and not layout.fs.ls(full, detail=False):
                layout.fs.rmdir(full)
        except OSError:  # a concurrent writer, or a store without real folders
            logger.debug("kept the folder %s", folder)


def record_preview(layout: OutputLayout, files: list[str]) -> None:
    """Write ``.daam-preview.json`` listing the gallery's files, before they are written (a plain
    write: a torn record falls back to the gallery's names, and ``.tmp/`` stays the run's)."""
    data = json.dumps(PreviewRecord(sorted(files)).to_dict(), indent=2) + "\n"
    with layout.fs.open(layout.path(PREVIEW_RECORD), "wb") as fh:
        fh.write(data.encode("utf-8"))


def require_destination(
    dest: OutputLayout,
    copied: Iterable[str] | None,
    record: str,
    error: type[Exception] = PublishError,
    writer: str = "publish did not copy there",
) -> list[str]:
    """Refuse (``error``, default ``PublishError``) a destination that holds files we did not write
    there, unless it is an earlier destination (``copied``: the paths its record lists, ``None``
    when it has none); the files of a user's at an earlier destination, which are left alone
    (logged as files ``writer``)."""
    known = set(copied or ()) | {record}
    limit = SCAN_LIMIT if copied is None else None
    _, foreign = _split(dest, lambda rel: rel in known or rel.split("/", 1)[0] == TMP_DIR, limit)
    where = f"--to {dest.root}"
    if foreign and copied is None:
        raise error(refusal(where, foreign, NEW_FOLDER))
    _left_untouched(where, foreign, writer)
    return foreign

"""Copy a validated output to any fsspec destination (``--to``: a local folder, ``gs://``, ``s3://``)::

    publish_to_path("out", "gs://bucket/datasets/name")

The destination gets what the Hub would get; resumable like the Hub upload. It must be a new path,
an empty folder or an earlier destination (``pipeline.ownership``): ``.daam-publish.json`` there
lists every file publish copied (written before each copy), and only those are ever replaced or
deleted; a user's files at an earlier destination stay as they are.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from typing import Any

from transforms.shards.layout import TMP_DIR, OutputLayout

from ..errors import PublishError
from ..ownership import refusal, require_destination
from .files import check_output, is_hidden, plan_publish, walk
from .plan import SEGMENTATION_CONFIG, LocalFile, PublishOptions, PublishResult, RemoteFile
from .segmentation import segmentation_view

logger = logging.getLogger(__name__)

DEST_MANIFEST = ".daam-publish.json"  # {path: {bytes, sha256}} of what was copied to a --to destination
PENDING = {"bytes": None, "sha256": None}  # a file being copied: ours, its content not known yet


def _read_manifest(dest: OutputLayout) -> dict[str, Any] | None:
    """The destination's manifest (``None`` when absent or unreadable: nothing there is known as ours)."""
    path = dest.path(DEST_MANIFEST)
    if not dest.exists(path):
        return None
    try:
        manifest = dest.read_json(path)
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        logger.debug("unreadable %s: no file there is known as copied by publish", path)
        return None
    return manifest


def dest_listing(dest: OutputLayout, manifest: dict[str, Any]) -> dict[str, RemoteFile]:
    """The destination's files that publish copied (those ``manifest`` lists) with their sha256:
    computed on a local disk, from the manifest on an object store (``None`` when the manifest does
    not know the file at its size)."""
    if not dest.fs.exists(dest.base.rstrip("/")):
        return {}
    files = {}
    for full, rel, size in walk(dest):
        if is_hidden(rel) or rel not in manifest:
            continue
        if dest.is_local:
            sha = dest.sha256(full)
        else:
            entry = manifest.get(rel) or {}
            sha = entry.get("sha256") if entry.get("bytes") == size else None
        files[rel] = RemoteFile(rel, size, sha)
    return files


def _entry(f: LocalFile) -> dict[str, Any]:
    """The manifest's entry of a file copied there."""
    return {"bytes": f.size, "sha256": f.sha256}


def _same(f: LocalFile, r: RemoteFile) -> bool:
    """Whether the destination's file already has the output file's bytes."""
    return r.sha256 == f.sha256 and r.size == f.size


def _copy(src: OutputLayout, f: LocalFile, dest: OutputLayout) -> None:
    """Write ``f`` at the destination (through a temporary file and a rename on a local disk;
    object stores write whole objects atomically anyway)."""
    final = dest.path(f.path)
    dest.fs.makedirs(posixpath.dirname(final), exist_ok=True)
    atomic = dest.is_local
    if atomic:
        dest.makedirs(TMP_DIR)
    target = dest.temp_file(final) if atomic else final
    with dest.fs.open(target, "wb") as out:
        if f.data is not None:
            out.write(f.data)
        else:
            with src.fs.open(f.full, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    if atomic:
        dest.commit(target, final)


def _destination(output: str, dest: str) -> tuple[OutputLayout, dict[str, Any] | None, set[str]]:
    """The destination, its manifest and its user's files; refuses the output itself, a file and a
    folder of a user's (``require_destination``)."""
    src = OutputLayout(output)
    target = OutputLayout(dest)
    if src.fs is target.fs and src.base.rstrip("/") == target.base.rstrip("/"):
        raise PublishError(f"--to {dest}: is the output itself")
    if target.fs.exists(target.base) and not target.fs.isdir(target.base):
        raise PublishError(f"--to {dest}: is a file, not a folder")
    copied = _read_manifest(target)
    return target, copied, set(require_destination(target, copied, DEST_MANIFEST))


def publish_to_path(
    output: str,
    dest: str,
    **options: Any,
) -> PublishResult:
    """Validate ``output`` and copy what the Hub would get to ``dest`` (local folder or fsspec URL).

    Files already at ``dest`` with the same sha256 (computed for a local destination, recorded in
    ``dest/.daam-publish.json`` for object stores) are skipped; stale files that an earlier publish
    copied to ``data/``, ``wds/``, ``preview/`` are deleted after the card is written. A destination
    holding other files is refused (``PublishError``), unless it is an earlier destination: then its
    user's files stay, and a copy that would land on one is refused. ``options`` are
    ``PublishOptions`` fields; with ``config="segmentation"`` the segmentation view is copied
    (``segmentation.segmentation_view``).
    """
    opts = PublishOptions(**options)
    if opts.config == SEGMENTATION_CONFIG:
        _destination(output, dest)  # refused before the export
        with segmentation_view(output, opts) as (view, view_options):
            return publish_to_path(view, dest, **view_options.to_kwargs())
    check_output(output, opts.validate)
    src = OutputLayout(output)
    target, copied, foreign = _destination(output, dest)
    manifest = dict(copied or {})
    plan = plan_publish(output, target.root, dest_listing(target, manifest), _same, opts)
    clash = sorted(f.path for f in plan.upload if f.path in foreign)
    if clash:
        raise PublishError(refusal(f"--to {dest}", clash, "move them away or choose a new folder",
                                   "holds files publish did not copy there where it would copy"))
    if opts.dry_run:
        opts.log(plan.describe())
        return PublishResult(plan, [], True)
    opts.log(f"publish {opts.label or output} -> {target.root}: {plan.counts('copy')}")
    manifest.update({f.path: _entry(f) for f in plan.unchanged})  # listed there already: ours
    made = []
    try:
        for commit in plan.commits:
            for f in commit.adds:
                manifest.setdefault(f.path, dict(PENDING))
            target.write_json_atomic(target.path(DEST_MANIFEST), manifest)  # before the copies: a crash leaves only known files
            for f in commit.adds:
                _copy(src, f, target)
                manifest[f.path] = _entry(f)
            for path in commit.deletes:
                target.remove(target.path(path))
                manifest.pop(path, None)
            target.write_json_atomic(target.path(DEST_MANIFEST), manifest)
            made.append(commit.message)
        tmp = target.path(TMP_DIR)
        if target.exists(tmp) and not target.fs.ls(tmp):
            target.fs.rmdir(tmp)
    except OSError as error:
        raise PublishError(f"--to {dest}: cannot write ({error.strerror or error}); rerun to resume") from error
    return PublishResult(plan, made, False)

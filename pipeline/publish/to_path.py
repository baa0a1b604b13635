"""Copy a validated output to any fsspec destination (``--to``: a local folder, ``gs://``, ``s3://``)::

    publish_to_path("out", "gs://bucket/datasets/name")

The destination gets what the Hub would get; resumable like the Hub upload.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from typing import Any

from transforms.layout import TMP_DIR, OutputLayout

from ..errors import PublishError
from .files import check_output, is_hidden, plan_publish, walk
from .plan import LocalFile, PublishOptions, PublishResult, RemoteFile

logger = logging.getLogger(__name__)

DEST_MANIFEST = ".daam-publish.json"  # {path: {bytes, sha256}} of what was copied to a --to destination


def _read_manifest(dest: OutputLayout) -> dict[str, Any]:
    """The destination's manifest (``{}`` when absent or unreadable)."""
    path = dest.path(DEST_MANIFEST)
    if not dest.exists(path):
        return {}
    try:
        return dest.read_json(path)
    except (OSError, ValueError):
        logger.debug("unreadable %s: every file there is copied again", path)
        return {}


def dest_listing(dest: OutputLayout) -> dict[str, RemoteFile]:
    """The destination's files with their sha256: computed on a local disk, from the manifest on an
    object store (``None`` when the manifest does not know the file at its size)."""
    if not dest.fs.exists(dest.base.rstrip("/")):
        return {}
    local = dest.is_local
    manifest = {} if local else _read_manifest(dest)
    files = {}
    for full, rel, size in walk(dest):
        if is_hidden(rel):
            continue
        if local:
            sha = dest.sha256(full)
        else:
            entry = manifest.get(rel) or {}
            sha = entry.get("sha256") if entry.get("bytes") == size else None
        files[rel] = RemoteFile(rel, size, sha)
    return files


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


def publish_to_path(
    output: str,
    dest: str,
    **options: Any,
) -> PublishResult:
    """Validate ``output`` and copy what the Hub would get to ``dest`` (local folder or fsspec URL).

    Files already at ``dest`` with the same sha256 (computed for a local destination, recorded in
    ``dest/.daam-publish.json`` for object stores) are skipped; stale files in ``data/``, ``wds/``,
    ``preview/`` are deleted after the card is written. ``options`` are ``PublishOptions`` fields.
    """
    opts = PublishOptions(**options)
    check_output(output, opts.validate)
    src = OutputLayout(output)
    target = OutputLayout(dest)
    if src.fs is target.fs and src.base.rstrip("/") == target.base.rstrip("/"):
        raise PublishError(f"--to {dest}: is the output itself")
    if target.fs.exists(target.base) and not target.fs.isdir(target.base):
        raise PublishError(f"--to {dest}: is a file, not a folder")
    plan = plan_publish(output, target.root, dest_listing(target), lambda f, r: r.sha256 == f.sha256 and r.size == f.size, opts)
    if opts.dry_run:
        opts.log(plan.describe())
        return PublishResult(plan, [], True)
    opts.log(f"publish {output} -> {target.root}: {plan.counts('copy')}")
    manifest = {f.path: {"bytes": f.size, "sha256": f.sha256} for f in plan.unchanged}
    made = []
    try:
        for commit in plan.commits:
            for f in commit.adds:
                _copy(src, f, target)
                manifest[f.path] = {"bytes": f.size, "sha256": f.sha256}
            for path in commit.deletes:
                target.remove(target.path(path))
            target.write_json_atomic(target.path(DEST_MANIFEST), manifest)
            made.append(commit.message)
        tmp = target.path(TMP_DIR)
        if target.exists(tmp) and not target.fs.ls(tmp):
            target.fs.rmdir(tmp)
    except OSError as error:
        raise PublishError(f"--to {dest}: cannot write ({error.strerror or error}); rerun to resume") from error
    return PublishResult(plan, made, False)

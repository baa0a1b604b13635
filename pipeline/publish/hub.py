"""``daam-datasets publish OUTPUT``: upload a validated output to the Hugging Face Hub, or copy it to
any fsspec destination (``--to``: a local folder, ``gs://``, ``s3://``).

What is published: the data shards (``data/``, ``wds/``), the dataset card (``README.md``), the run
summary (``run.json``) and the preview (``preview/``, when ``daam-datasets preview`` made one).
Not published: the commit markers and bookkeeping (``_stats/``, ``_manifest/``, ``.lock``,
``.tmp/``, hidden files) and the failure records (``_failures/``, unless ``include_failures``).

The output is validated first (``pipeline.validate.validate_output``) and a damaged one is
refused. Uploads are resumable: a file already on the Hub with the same content (LFS sha256, or
git blob id for small files) is not sent again, so an interrupted publish is finished by running
it again. Data shards go in batched commits first, the card and run summary last (together with
deleting data files of an earlier version that this output no longer has), so the card never
announces rows whose shards are not there yet.

Library entry points take the Hub client as a parameter (``api``), so tests pass a fake::

    publish_to_hub("out", "org/name", api=HfApi(token=...))
    publish_to_path("out", "gs://bucket/datasets/name")
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import posixpath
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from transforms.layout import (
    CARD_FILE,
    DATA_DIR,
    FAILURES_DIR,
    LOCK_FILE,
    MANIFEST_DIR,
    RUN_FILE,
    STATS_DIR,
    TMP_DIR,
    WDS_DIR,
    OutputLayout,
)

from ..card import PREVIEW_IMAGE, embed_preview, remove_preview

logger = logging.getLogger(__name__)

PREVIEW_DIR = posixpath.dirname(PREVIEW_IMAGE)
REPO_TYPE = "dataset"
DEFAULT_MAX_FILES = 50
DEFAULT_MAX_BYTES = 4 * 1024**3
SMALL_FILES_PER_COMMIT = 1000  # preview assets, failure records: small, many
DEST_MANIFEST = ".daam-publish.json"  # sha256 of what was copied to a --to destination
PLACEHOLDER_REPO = "path/or/org-name"  # the card's load example before publishing
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "NetworkError", "TransportError", "TimeoutException",
                   "ConnectionError", "NameResolutionError", "OfflineModeIsEnabled", "ProxyError")


class PublishError(RuntimeError):
    """Publishing cannot go on; the message is for the user as is (one line, or a short list)."""


class DamagedOutput(PublishError):
    """The output failed validation and is not published."""


# -- what is published -----------------------------------------------------------------------------
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
        return sum(f.size for f in self.adds)


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

    def describe(self) -> str:
        """The plan as text (what ``--dry-run`` prints)."""
        lines = [f"publish {self.source} -> {self.target}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += _file_lines("upload", self.upload, "")
        lines += _file_lines("same", self.unchanged, "  (already there, same sha256)")
        for path in self.delete:
            lines.append(f"  delete  {path:<48} {'':>10}  (not in this output)")
        total = sum(f.size for f in self.upload)
        lines.append(
            f"{len(self.upload)} files to upload ({human_bytes(total)}), {len(self.unchanged)} unchanged, "
            f"{len(self.delete)} to delete, in {len(self.commits)} commit{'s' if len(self.commits) != 1 else ''}"
            + (":" if self.commits else " (up to date)")
        )
        for i, c in enumerate(self.commits, 1):
            parts = [f"{len(c.adds)} files, {human_bytes(c.bytes)}"]
            if c.deletes:
                parts.append(f"{len(c.deletes)} deletions")
            lines.append(f"  commit {i}/{len(self.commits)}: {c.message!r} ({'; '.join(parts)})")
        return "\n".join(lines)


def _file_lines(verb: str, files: list[LocalFile], note: str) -> list[str]:
    """One line per data shard and top-level file; one line per other folder (preview/: hundreds)."""
    lines, groups = [], {}
    for f in files:
        top = f.path.split("/", 1)[0]
        if "/" in f.path and top not in (DATA_DIR, WDS_DIR):
            groups.setdefault(top, []).append(f)
        else:
            lines.append(f"  {verb:<7} {f.path:<48} {human_bytes(f.size):>10}{note}")
    for top, members in sorted(groups.items()):
        name = f"{top}/ ({len(members)} files)"
        lines.append(f"  {verb:<7} {name:<48} {human_bytes(sum(m.size for m in members)):>10}{note}")
    return lines


@dataclass
class PublishResult:
    """What was done: the plan, the commits made (URLs or descriptions) and whether it was a dry run."""

    plan: PublishPlan
    commits: list[str]
    dry_run: bool

    def line(self) -> str:
        if self.dry_run:
            return "dry run: nothing was sent"
        up = len(self.plan.upload)
        return (f"published {up} files ({human_bytes(sum(f.size for f in self.plan.upload))}) in "
                f"{len(self.commits)} commits, {len(self.plan.unchanged)} unchanged, "
                f"{len(self.plan.delete)} deleted -> {self.plan.target}")


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _excluded(rel: str, include_failures: bool, include_preview: bool) -> bool:
    parts = rel.split("/")
    top = parts[0]
    if any(p.startswith(".") for p in parts):  # .lock, .tmp/, .git*, hidden temporaries
        return True
    if top in (STATS_DIR, MANIFEST_DIR, TMP_DIR, LOCK_FILE):
        return True
    if top == FAILURES_DIR and not include_failures:
        return True
    return top == PREVIEW_DIR and not include_preview


def managed_prefixes(include_failures: bool, include_preview: bool) -> tuple[str, ...]:
    """Folders this tool owns at the destination: files there that the output lacks are stale."""
    prefixes = [DATA_DIR + "/", WDS_DIR + "/"]
    if include_preview:
        prefixes.append(PREVIEW_DIR + "/")
    if include_failures:
        prefixes.append(FAILURES_DIR + "/")
    return tuple(prefixes)


def _sha256_file(fs: Any, full: str) -> str:
    digest = hashlib.sha256()
    with fs.open(full, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_hashes(layout: OutputLayout) -> dict[str, tuple[int, str]]:
    """``{path: (bytes, sha256)}`` of data files from the stats markers (no need to re-hash)."""
    known: dict[str, tuple[int, str]] = {}
    for full in layout.list(STATS_DIR, ".json"):
        try:
            stats = layout.read_json(full)
            for info in stats.get("files", {}).values():
                if info.get("path") and info.get("sha256") and info.get("bytes") is not None:
                    known[info["path"]] = (int(info["bytes"]), str(info["sha256"]))
        except (OSError, ValueError, AttributeError):
            continue
    return known


def collect_files(
    output: str,
    include_failures: bool = False,
    include_preview: bool = True,
    card_text: Callable[[str, bool], str] | None = None,
) -> list[LocalFile]:
    """Every file of the output to publish, sorted; ``card_text(text, has_preview)`` may rewrite
    the card for the destination."""
    layout = OutputLayout(output)
    base = layout.base.rstrip("/")
    known = _known_hashes(layout)
    files: list[LocalFile] = []
    for full, info in sorted(layout.fs.find(base, withdirs=False, detail=True).items()):
        rel = full[len(base) + 1 :] if full.startswith(base + "/") else posixpath.basename(full)
        if _excluded(rel, include_failures, include_preview):
            continue
        size = int(info.get("size") or 0)
        if rel in known and known[rel][0] == size:
            sha = known[rel][1]
        else:
            sha = _sha256_file(layout.fs, full)
        files.append(LocalFile(rel, full, size, sha))
    paths = {f.path for f in files}
    has_preview = include_preview and PREVIEW_IMAGE in paths
    for i, f in enumerate(files):
        if f.path == CARD_FILE:
            with layout.fs.open(f.full, "rb") as fh:
                text = fh.read().decode("utf-8")
            text = embed_preview(text) if has_preview else remove_preview(text)
            if card_text is not None:
                text = card_text(text, has_preview)
            data = text.encode("utf-8")
            files[i] = LocalFile(f.path, f.full, len(data), hashlib.sha256(data).hexdigest(), data)
    return files


def plan_commits(
    upload: list[LocalFile],
    delete: list[str],
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Commit]:
    """Batch the uploads: data shards first (≤ ``max_files`` files and ≤ ``max_bytes`` per commit),
    then other files (preview, failure records; ≤ ``SMALL_FILES_PER_COMMIT`` files and ≤
    ``max_bytes``), then card + run summary + deletions last."""
    last_names = (CARD_FILE, RUN_FILE)
    data = [f for f in upload if f.path.startswith((DATA_DIR + "/", WDS_DIR + "/"))]
    final = [f for f in upload if f.path in last_names]
    other = [f for f in upload if f not in data and f not in final]
    commits: list[Commit] = []
    for kind, group, limit in (("data shards", data, max_files), ("files", other, SMALL_FILES_PER_COMMIT)):
        batches: list[list[LocalFile]] = []
        for f in group:
            if not batches or len(batches[-1]) >= limit or (
                batches[-1] and sum(g.size for g in batches[-1]) + f.size > max_bytes
            ):
                batches.append([])
            batches[-1].append(f)
        start = 0
        for batch in batches:
            what = "preview" if kind == "files" and all(b.path.startswith(PREVIEW_DIR + "/") for b in batch) else kind
            span = f"{start + 1}-{start + len(batch)} of {len(group)}" if len(batches) > 1 else f"{len(batch)}"
            commits.append(Commit(f"Upload {what} ({span})", list(batch)))
            start += len(batch)
    if final or delete:
        labels = {CARD_FILE: "dataset card", RUN_FILE: "run summary"}
        label = " and ".join(labels[name] for name in last_names if any(f.path == name for f in final))
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
    """Compare the output with the destination and batch what differs."""
    upload, unchanged = [], []
    for f in local:
        there = remote.get(f.path)
        (unchanged if there is not None and same(f, there) else upload).append(f)
    mine = {f.path for f in local}
    delete = sorted(p for p in remote if p.startswith(prefixes) and p not in mine)
    return PublishPlan(source, target, upload, unchanged, delete, plan_commits(upload, delete, max_files, max_bytes))


# -- validation ------------------------------------------------------------------------------------
def check_output(output: str, validate: Callable[[str], list] | None = None) -> None:
    """Raise ``PublishError`` listing the problems if the output is damaged."""
    if validate is None:
        from ..validate import validate_output as validate
    problems = validate(output)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:10])
        more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DamagedOutput(
            f"{output}: refusing to publish a damaged output ({len(problems)} problems); "
            f"run `daam-datasets validate {output} --repair` first\n{listed}{more}"
        )


# -- the Hub ---------------------------------------------------------------------------------------
def git_blob_id(data: bytes) -> str:
    """Git's object id of a blob (what the Hub reports as ``blob_id`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file of a blob (its git id is the ``blob_id`` of an LFS file)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def same_on_hub(fs: Any) -> Callable[[LocalFile, RemoteFile], bool]:
    """Whether a Hub file has the local content: LFS sha256, or else its git blob id."""

    def same(f: LocalFile, r: RemoteFile) -> bool:
        if r.size != f.size:  # the Hub reports the content size for regular and LFS files alike
            return False
        if r.sha256:
            return r.sha256 == f.sha256
        if r.blob_id:
            if r.blob_id == git_blob_id(lfs_pointer(f.sha256, f.size)):
                return True
            data = f.data
            if data is None:
                with fs.open(f.full, "rb") as fh:
                    data = fh.read()
            return r.blob_id == git_blob_id(data)
        return False

    return same


def hub_tree(api: Any, repo_id: str, revision: str | None) -> dict[str, RemoteFile]:
    """Every file on the Hub repo's ``revision`` (``{}`` if the repo or branch does not exist)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    def listing(rev: str | None) -> dict[str, RemoteFile]:
        files = {}
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=rev, repo_type=REPO_TYPE):
            if not hasattr(entry, "blob_id"):  # RepoFolder
                continue
            lfs = getattr(entry, "lfs", None)
            files[entry.path] = RemoteFile(
                entry.path, int(entry.size or 0), getattr(lfs, "sha256", None) if lfs else None, entry.blob_id
            )
        return files

    try:
        return listing(revision)
    except RevisionNotFoundError:
        try:
            return listing(None)  # a new branch starts from the default one
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return {}
    except RepositoryNotFoundError:
        return {}


def _is_network_error(error: BaseException) -> bool:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(cls.__name__ in _NETWORK_ERRORS for cls in type(error).__mro__) or isinstance(error, socket.gaierror):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def _hub_error(error: BaseException, endpoint: str, repo_id: str) -> PublishError:
    """One clear line for a Hub failure."""
    if _is_network_error(error):
        return PublishError(f"cannot reach the Hugging Face Hub at {endpoint} ({_short(error)}): "
                            "check the network, proxy settings or HF_ENDPOINT, then rerun (the upload resumes)")
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403) or type(error).__name__ in ("LocalTokenNotFoundError",):
        return PublishError(f"not allowed to write to {repo_id} on the Hub (HTTP {status or 'no token'}): "
                            "pass --token with a write token or log in with `hf auth login`")
    return PublishError(f"the Hub refused the upload to {repo_id}: {_short(error)}")


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def preflight(endpoint: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when the Hub endpoint cannot be reached (instead of retrying)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PublishError("HF_HUB_OFFLINE is set: the Hub cannot be reached; unset it to publish")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as error:
        raise PublishError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({error.strerror or error}): no network? "
            "Check the connection, proxy settings or HF_ENDPOINT, then rerun"
        ) from None


def _card_for_repo(repo_id: str) -> Callable[[str, bool], str]:
    def rewrite(text: str, has_preview: bool) -> str:
        return text.replace(f'load_dataset("{PLACEHOLDER_REPO}"', f'load_dataset("{repo_id}"')

    return rewrite


def publish_to_hub(
    output: str,
    repo_id: str,
    *,
    api: Any = None,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    include_failures: bool = False,
    include_preview: bool = True,
    dry_run: bool = False,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    validate: Callable[[str], list] | None = None,
    log: Callable[[str], None] = print,
) -> PublishResult:
    """Validate ``output`` and upload it to the dataset repo ``repo_id`` (see the module doc).

    ``api`` is an ``huggingface_hub.HfApi`` (made from ``token`` when ``None``); a dry run only
    reads the repo's file list (and plans as if it were empty when that fails).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if not _REPO_ID.match(repo_id or ""):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME (e.g. my-lab/daam-coco)")
    check_output(output, validate)
    layout = OutputLayout(output)
    offline = ""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token, library_name="daam-datasets")
        try:
            preflight(api.endpoint)
        except PublishError as error:
            if not dry_run:
                raise
            offline = str(error)
    endpoint = getattr(api, "endpoint", "https://huggingface.co")
    target = f"hf://datasets/{repo_id}" + (f"@{revision}" if revision else "")
    local = collect_files(output, include_failures, include_preview, _card_for_repo(repo_id))
    prefixes = managed_prefixes(include_failures, include_preview)
    notes: list[str] = []
    if dry_run:
        try:
            if offline:
                raise PublishError(offline)
            remote = hub_tree(api, repo_id, revision)
        except Exception as error:  # noqa: BLE001 - a dry run plans anyway
            reason = error if isinstance(error, PublishError) else _hub_error(error, endpoint, repo_id)
            notes.append(f"{reason}; planned as if {repo_id} were empty on the Hub")
            remote = {}
        plan = make_plan(output, target, local, remote, same_on_hub(layout.fs), prefixes, max_files, max_bytes)
        plan.notes = notes
        log(plan.describe())
        return PublishResult(plan, [], True)
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=True if private else None, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=REPO_TYPE, exist_ok=True)
        remote = hub_tree(api, repo_id, revision)
    except PublishError:
        raise
    except Exception as error:
        raise _hub_error(error, endpoint, repo_id) from error
    plan = make_plan(output, target, local, remote, same_on_hub(layout.fs), prefixes, max_files, max_bytes)
    log(f"publish {output} -> {target}: {len(plan.upload)} files to upload, {len(plan.unchanged)} unchanged, "
        f"{len(plan.delete)} to delete, {len(plan.commits)} commits")
    made: list[str] = []
    local_fs = "file" in _protocols(layout.fs)
    for i, commit in enumerate(plan.commits, 1):
        with tempfile.TemporaryDirectory(prefix="daam-publish-") as staging:
            ops: list[Any] = []
            for f in commit.adds:
                if f.data is not None:
                    source: Any = f.data
                elif local_fs:
                    source = f.full
                else:  # fetch from gs:// / s3:// to a local file first
                    source = os.path.join(staging, uuid.uuid4().hex)
                    layout.fs.get_file(f.full, source)
                ops.append(CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=source))
            ops += [CommitOperationDelete(path_in_repo=p) for p in commit.deletes]
            try:
                info = api.create_commit(
                    repo_id, operations=ops, commit_message=commit.message, repo_type=REPO_TYPE, revision=revision,
                    commit_description="Published with daam-datasets.",
                )
            except Exception as error:
                raise _hub_error(error, endpoint, repo_id) from error
        url = str(getattr(info, "commit_url", "") or info)
        made.append(url)
        log(f"  commit {i}/{len(plan.commits)}: {commit.message} ({len(commit.adds)} files, {human_bytes(commit.bytes)}) {url}")
    return PublishResult(plan, made, False)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


# -- any fsspec destination ------------------------------------------------------------------------
def _dest_listing(dest: OutputLayout) -> dict[str, RemoteFile]:
    base = dest.base.rstrip("/")
    if not dest.fs.exists(base):
        return {}
    manifest: dict[str, Any] = {}
    manifest_path = dest.path(DEST_MANIFEST)
    if dest.exists(manifest_path):
        try:
            manifest = dest.read_json(manifest_path)
        except (OSError, ValueError):
            manifest = {}
    local = "file" in _protocols(dest.fs)
    files = {}
    for full, info in dest.fs.find(base, withdirs=False, detail=True).items():
        rel = full[len(base) + 1 :] if full.startswith(base + "/") else posixpath.basename(full)
        if any(p.startswith(".") for p in rel.split("/")):
            continue
        size = int(info.get("size") or 0)
        if local:
            sha = _sha256_file(dest.fs, full)
        else:
            entry = manifest.get(rel) or {}
            sha = entry.get("sha256") if entry.get("bytes") == size else None
        files[rel] = RemoteFile(rel, size, sha)
    return files


def _copy(src: OutputLayout, f: LocalFile, dest: OutputLayout) -> None:
    final = dest.path(f.path)
    dest.fs.makedirs(posixpath.dirname(final), exist_ok=True)
    atomic = "file" in _protocols(dest.fs)  # object stores write whole objects atomically anyway
    target = dest.temp_file(final) if atomic else final
    if atomic:
        dest.makedirs(TMP_DIR)
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
    *,
    include_failures: bool = False,
    include_preview: bool = True,
    dry_run: bool = False,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    validate: Callable[[str], list] | None = None,
    log: Callable[[str], None] = print,
) -> PublishResult:
    """Validate ``output`` and copy what the Hub would get to ``dest`` (local folder or fsspec URL).

    Resumable like the Hub upload: files already at ``dest`` with the same sha256 (computed for a
    local destination, recorded in ``dest/.daam-publish.json`` for object stores) are skipped;
    stale files in ``data/``, ``wds/``, ``preview/`` are deleted after the card is written.
    """
    check_output(output, validate)
    src = OutputLayout(output)
    target = OutputLayout(dest)
    if src.fs is target.fs and src.base.rstrip("/") == target.base.rstrip("/"):
        raise PublishError(f"--to {dest}: is the output itself")
    if target.fs.exists(target.base) and not target.fs.isdir(target.base):
        raise PublishError(f"--to {dest}: is a file, not a folder")
    local = collect_files(output, include_failures, include_preview)
    remote = _dest_listing(target)
    plan = make_plan(
        output, target.root, local, remote, lambda f, r: r.sha256 == f.sha256 and r.size == f.size,
        managed_prefixes(include_failures, include_preview), max_files, max_bytes,
    )
    if dry_run:
        log(plan.describe())
        return PublishResult(plan, [], True)
    log(f"publish {output} -> {target.root}: {len(plan.upload)} files to copy, {len(plan.unchanged)} unchanged, "
        f"{len(plan.delete)} to delete")
    manifest = {f.path: {"bytes": f.size, "sha256": f.sha256} for f in plan.unchanged}
    made = []
    try:
        for commit in plan.commits:
            for f in commit.adds:
                _copy(src, f, target)
                manifest[f.path] = {"bytes": f.size, "sha256": f.sha256}
            for path in commit.deletes:
                full = target.path(path)
                if target.exists(full):
                    target.fs.rm(full)
            target.write_json_atomic(target.path(DEST_MANIFEST), manifest)
            made.append(commit.message)
        tmp = target.path(TMP_DIR)
        if target.exists(tmp) and not target.fs.ls(tmp):
            target.fs.rmdir(tmp)
    except OSError as error:
        raise PublishError(f"--to {dest}: cannot write ({error.strerror or error}); rerun to resume") from error
    return PublishResult(plan, made, False)

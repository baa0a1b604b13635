"""Upload a validated output to a Hugging Face dataset repository.

Resumable: a file already on the Hub with the same content (LFS sha256, or git blob id for small
files) is not sent again, so an interrupted publish is finished by running it again. The Hub
client is a parameter (``api``), so tests pass a fake::

    publish_to_hub("out", "org/name", api=HfApi(token=...))
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash

from transforms.shards.layout import OutputLayout

from ..errors import PublishError
from .files import check_output, plan_publish
from .plan import SEGMENTATION_CONFIG, LocalFile, PublishOptions, PublishPlan, PublishResult, RemoteFile, human_bytes
from .segmentation import segmentation_view

try:  # the HTTP client of huggingface_hub 2.x
    from httpx2 import TransportError
except ImportError:  # huggingface_hub 1.x
    from httpx import TransportError

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# no answer from the Hub at all (connect, DNS, proxy, timeout, HF_HUB_OFFLINE): the upload resumes on a rerun
NETWORK_ERRORS = (TransportError, OfflineModeIsEnabled, ConnectionError, socket.gaierror)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file of a blob (its git id is the ``blob_id`` of an LFS file)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def same_on_hub(layout: OutputLayout) -> Callable[[LocalFile, RemoteFile], bool]:
    """Whether a Hub file has the local content: LFS sha256, or else its git blob id."""

    def same(f: LocalFile, r: RemoteFile) -> bool:
        if r.size != f.size:  # the Hub reports the content size for regular and LFS files alike
            return False
        if r.sha256:
            return r.sha256 == f.sha256
        if not r.blob_id:
            return False
        if r.blob_id == git_hash(lfs_pointer(f.sha256, f.size)):
            return True
        if f.data is not None:
            return r.blob_id == git_hash(f.data)
        with layout.fs.open(f.full, "rb") as fh:
            return r.blob_id == git_hash(fh.read())

    return same


def hub_tree(api: Any, repo_id: str, revision: str | None) -> dict[str, RemoteFile]:
    """Every file on the Hub repo's ``revision`` (``{}`` if the repo or branch does not exist)."""

    def listing(rev: str | None) -> dict[str, RemoteFile]:
        files = {}
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=rev, repo_type=REPO_TYPE):
            if not hasattr(entry, "blob_id"):  # RepoFolder
                continue
            sha256 = getattr(getattr(entry, "lfs", None), "sha256", None)  # LFS files only
            files[entry.path] = RemoteFile(entry.path, int(entry.size or 0), sha256, entry.blob_id)
        return files

    try:
        return listing(revision)
    except RevisionNotFoundError:
        logger.debug("%s has no branch %s yet: it starts from the default one", repo_id, revision)
        try:
            return listing(None)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return {}
    except RepositoryNotFoundError:
        logger.debug("%s is not on the Hub yet", repo_id)
        return {}


def is_network_error(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised from) means the Hub could not be reached."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NETWORK_ERRORS):
            return True
        error = error.__cause__ or error.__context__
    return False


def hub_error(error: BaseException, endpoint: str, repo_id: str) -> PublishError:
    """One clear line for a Hub failure."""
    if is_network_error(error):
        return PublishError(f"cannot reach the Hugging Face Hub at {endpoint} ({_short(error)}): "
                            "check the network, proxy settings or HF_ENDPOINT, then rerun (the upload resumes)")
    status = error.response.status_code if isinstance(error, HfHubHTTPError) else None
    if status in (401, 403) or isinstance(error, LocalTokenNotFoundError):
        return PublishError(f"not allowed to write to {repo_id} on the Hub (HTTP {status or 'no token'}): "
                            "pass --token with a write token or log in with `hf auth login`")
    return PublishError(f"the Hub refused the upload to {repo_id}: {_short(error)}")


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def preflight(endpoint: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when the Hub endpoint cannot be reached (instead of retrying)."""
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


def _operations(layout: OutputLayout, adds: list[LocalFile], deletes: list[str], staging: str) -> list[Any]:
    """The commit's operations; files on an object store are fetched into ``staging`` first."""
    ops: list[Any] = []
    for f in adds:
        if f.data is not None:
            source: Any = f.data
        elif layout.is_local:
            source = f.full
        else:  # gs:// / s3://: to a local file first
            source = os.path.join(staging, uuid.uuid4().hex)
            layout.fs.get_file(f.full, source)
        ops.append(CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=source))
    return ops + [CommitOperationDelete(path_in_repo=p) for p in deletes]


def _send(api: Any, layout: OutputLayout, plan: PublishPlan, repo_id: str, revision: str | None,
          endpoint: str, log: Callable[[str], None]) -> list[str]:
    """Make the plan's commits in order; their URLs."""
    made: list[str] = []
    for i, commit in enumerate(plan.commits, 1):
        with tempfile.TemporaryDirectory(prefix="daam-publish-") as staging:
            ops = _operations(layout, commit.adds, commit.deletes, staging)
            try:
                info = api.create_commit(
                    repo_id, operations=ops, commit_message=commit.message, repo_type=REPO_TYPE, revision=revision,
                    commit_description="Published with daam-datasets.",
                )
            except Exception as error:
                raise hub_error(error, endpoint, repo_id) from error
        url = str(getattr(info, "commit_url", "") or info)
        made.append(url)
        log(f"  commit {i}/{len(plan.commits)}: {commit.message} ({len(commit.adds)} files, "
            f"{human_bytes(commit.bytes)}) {url}")
    return made


def publish_to_hub(
    output: str,
    repo_id: str,
    *,
    api: Any = None,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    **options: Any,
) -> PublishResult:
    """Validate ``output`` and upload it to the dataset repo ``repo_id`` (see the module doc).

    ``api`` is an ``huggingface_hub.HfApi`` (made from ``token`` when ``None``); ``options`` are
    ``PublishOptions`` fields (``config="segmentation"``: the segmentation view, see
    ``segmentation.segmentation_view``). A dry run only reads the repo's file list (and plans as if
    it were empty when that fails).
    """
    opts = PublishOptions(**options)
    dry_run, log = opts.dry_run, opts.log
    if not _REPO_ID.match(repo_id or ""):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME (e.g. my-lab/daam-coco)")
    if opts.config == SEGMENTATION_CONFIG:
        if api is None and not dry_run:
            api = HfApi(token=token, library_name="daam-datasets")
            preflight(api.endpoint)  # no network: refused before the export
        with segmentation_view(output, opts, repo_id) as (view, view_options):
            return publish_to_hub(view, repo_id, api=api, token=token, private=private, revision=revision,
                                  **view_options.to_kwargs())
    check_output(output, opts.validate)
    layout = OutputLayout(output)
    offline: PublishError | None = None
    if api is None:
        api = HfApi(token=token, library_name="daam-datasets")
        try:
            preflight(api.endpoint)
        except PublishError as error:
            if not dry_run:
                raise
            offline = error
    endpoint = getattr(api, "endpoint", "https://huggingface.co")
    target = f"hf://datasets/{repo_id}" + (f"@{revision}" if revision else "")

    def plan_for(remote: dict[str, RemoteFile]) -> PublishPlan:
        return plan_publish(output, target, remote, same_on_hub(layout), opts, repo_id)

    if dry_run:
        notes: list[str] = []
        try:
            if offline is not None:
                raise offline
            remote = hub_tree(api, repo_id, revision)
        except Exception as error:  # noqa: BLE001 - a dry run plans anyway
            reason = error if isinstance(error, PublishError) else hub_error(error, endpoint, repo_id)
            notes.append(f"{reason}; planned as if {repo_id} were empty on the Hub")
            remote = {}
        plan = plan_for(remote)
        plan.notes = notes
        log(plan.describe())
        return PublishResult(plan, [], True)
    try:
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=True if private else None, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=REPO_TYPE, exist_ok=True)
        remote = hub_tree(api, repo_id, revision)
    except Exception as error:
        raise hub_error(error, endpoint, repo_id) from error
    plan = plan_for(remote)
    log(f"publish {opts.label or output} -> {target}: {plan.counts()}, {len(plan.commits)} commits")
    return PublishResult(plan, _send(api, layout, plan, repo_id, revision, endpoint, log), False)

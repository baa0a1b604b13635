"""Preparing an output folder for a run: checks, lock, resume decisions, manifests, summary."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: the heartbeat lock file is used
    fcntl = None  # type: ignore[assignment]

from transforms.layout import (
    CARD_FILE,
    DATA_DIR,
    FAILURES_DIR,
    LOCK_FILE,
    MANIFEST_DIR,
    PREVIEW_DIR,
    RUN_FILE,
    STATS_DIR,
    TMP_DIR,
    WDS_DIR,
    OutputLayout,
)
from transforms.prompts import Corpus, CorpusError
from transforms.sharding import ShardSpec, shard_prompts

READ_FAILURES = "read.jsonl"
LOCK_STALE_SECONDS = 600


class OutputError(RuntimeError):
    """The output folder cannot be used as asked; the message is for the user as is."""


def corpus_digest(corpus: Corpus) -> str:
    """Hash of the prompts (ids, text, seeds, negatives) in order."""
    digest = hashlib.sha256()
    for p in corpus.prompts:
        digest.update(json.dumps([p.id, p.prompt, p.seed, p.negative_prompt]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def require_prompts(corpus: Corpus, source: str) -> None:
    """Refuse a corpus without a single usable prompt, before anything is written."""
    if corpus.prompts:
        return
    parts = []
    if corpus.failures:
        first = corpus.failures[0]
        parts.append(f"{len(corpus.failures)} unreadable rows, first at line {first.line}: {first.reason}")
    if corpus.blank:
        parts.append(f"{corpus.blank} blank rows")
    raise CorpusError(f"--prompts {source}: no usable prompts ({'; '.join(parts) or 'the corpus is empty'})")


def check_output_path(layout: OutputLayout) -> None:
    """Refuse an output that is a file or cannot be written, with one clear line."""
    if layout.fs.exists(layout.base) and not layout.fs.isdir(layout.base):
        raise OutputError(f"--output {layout.root}: is a file, not a folder")
    try:
        layout.makedirs(TMP_DIR)
        probe = layout.path(TMP_DIR, f"probe-{os.getpid()}")
        with layout.fs.open(probe, "wb") as fh:
            fh.write(b"ok")
        layout.fs.rm(probe)
    except OSError as error:
        raise OutputError(f"--output {layout.root}: not writable ({error.strerror or error})") from None


class RunLock:
    """An exclusive lock of an output folder for one run.

    Local folders: an OS lock (``fcntl.flock``) on ``.lock``, which the kernel drops when the
    process dies, so a crashed run (even ``kill -9``) never blocks the next one and a reused pid
    cannot fake a live owner. Other filesystems (``gs://``, ``s3://``): a lock file with owner and
    heartbeat, taken over when its process is gone (same host) or its heartbeat is older than
    ``LOCK_STALE_SECONDS``.
    """

    def __init__(self, layout: OutputLayout) -> None:
        self.layout = layout
        self.path = layout.path(LOCK_FILE)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        protocols = layout.fs.protocol if isinstance(layout.fs.protocol, tuple) else (layout.fs.protocol,)
        self._local = fcntl is not None and "file" in protocols
        self._fd: int | None = None
        self._held = False
        self._mutex = threading.Lock()  # heartbeats come from the progress thread

    def _alive(self, info: dict[str, Any]) -> bool:
        host, _, pid = str(info.get("owner", "")).partition(":")
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return time.time() - float(info.get("heartbeat", 0)) < LOCK_STALE_SECONDS

    def _busy(self, info: dict[str, Any]) -> OutputError:
        return OutputError(
            f"--output {self.layout.root}: another run ({info.get('owner', 'unknown owner')}) is writing here; "
            f"wait for it to finish or stop it, then rerun (a crashed run's lock does not block)"
        )

    def _acquire_local(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
                except (OSError, ValueError):
                    info = {}
                os.close(fd)
                raise self._busy(info) from None
            try:  # the holder may have removed the file between our open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)

    def acquire(self) -> None:
        """Take the lock or raise ``OutputError`` naming the run that holds it."""
        if self._local:
            self._acquire_local()
        elif self.layout.exists(self.path):
            try:
                info = self.layout.read_json(self.path)
            except (OSError, ValueError):
                info = {}
            if info and self._alive(info):
                raise self._busy(info)
        self._held = True
        self.heartbeat()

    def heartbeat(self) -> None:
        """Refresh the lock's owner and timestamp (no-op once released)."""
        info = {"owner": self.owner, "heartbeat": time.time()}
        with self._mutex:
            if not self._held:
                return
            if self._fd is not None:
                data = json.dumps(info).encode("utf-8")
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, data, 0)
            else:
                self.layout.write_json_atomic(self.path, info)

    def release(self) -> None:
        """Remove the lock if it is ours."""
        with self._mutex:
            if not self._held:
                return
            self._held = False
            if self._fd is not None:
                try:
                    os.unlink(self.path)  # while still holding it: a waiter then retries on a new file
                except OSError:
                    pass
                os.close(self._fd)
                self._fd = None
                return
            try:
                if self.layout.read_json(self.path).get("owner") == self.owner:
                    self.layout.fs.rm(self.path)
            except (OSError, ValueError):
                pass


def reset_output(layout: OutputLayout) -> None:
    """Delete everything a previous run wrote (``--overwrite``)."""
    for folder in (DATA_DIR, WDS_DIR, STATS_DIR, FAILURES_DIR, MANIFEST_DIR, PREVIEW_DIR, TMP_DIR):
        path = layout.path(folder)
        if layout.exists(path):
            layout.fs.rm(path, recursive=True)
    for name in (RUN_FILE, CARD_FILE):
        if layout.exists(layout.path(name)):
            layout.fs.rm(layout.path(name))


def check_resume(layout: OutputLayout, fingerprint: str, overwrite: bool) -> None:
    """Refuse to mix runs with different settings in one output unless ``overwrite``."""
    run_file = layout.path(RUN_FILE)
    has_previous = layout.exists(run_file) or layout.list(STATS_DIR, ".json")
    if overwrite:
        reset_output(layout)
        return
    if not has_previous:
        return
    previous = layout.read_json(run_file).get("fingerprint") if layout.exists(run_file) else None
    if previous != fingerprint:
        raise OutputError(
            f"--output {layout.root} holds a run with other settings or prompts "
            f"(fingerprint {previous} vs {fingerprint}); use a new --output or pass --overwrite"
        )


def clean_temporaries(layout: OutputLayout) -> None:
    """Remove temp files left by crashed writers (none can be live: we hold the lock)."""
    path = layout.path(TMP_DIR)
    if layout.exists(path):
        layout.fs.rm(path, recursive=True)


def committed_shards(layout: OutputLayout) -> set[str]:
    """Names of shards whose stats marker exists."""
    return {os.path.basename(p)[: -len(".json")] for p in layout.list(STATS_DIR, ".json")}


def write_manifests(layout: OutputLayout, corpus: Corpus, specs: list[ShardSpec]) -> None:
    """Write each pending shard's prompts (JSON lines) for the workers."""
    layout.makedirs(MANIFEST_DIR)
    for spec in specs:
        lines = [json.dumps(p.__dict__, ensure_ascii=False) for p in shard_prompts(corpus.prompts, spec)]
        layout.write_bytes_atomic(layout.manifest_file(spec.name), ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


INCOMPLETE_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/RUN-NOT-FINISHED-*.parquet
---

# Unfinished daam-datasets run

This folder holds a run that has not finished (it is running, crashed or was stopped), so its
card points at no data and `load_dataset` refuses it rather than load some of the shards.
Rerun the same `daam-datasets run` command to finish it; `daam-datasets validate` lists what is
missing. The real card replaces this one when the run completes.
"""


def write_incomplete_card(layout: OutputLayout) -> None:
    """Write a card that ``load_dataset`` refuses, until the run completes. (A finished run's
    card needs no placeholder: its split sizes make ``load_dataset`` refuse a partial folder.)"""
    layout.write_bytes_atomic(layout.path(CARD_FILE), INCOMPLETE_CARD.encode("utf-8"))


def write_read_failures(layout: OutputLayout, corpus: Corpus) -> None:
    """Record corpus rows that could not become prompts."""
    path = layout.path(FAILURES_DIR, READ_FAILURES)
    if not corpus.failures:
        if layout.exists(path):
            layout.fs.rm(path)
        return
    lines = [
        json.dumps({"id": None, "source": f.source, "line": f.line, "stage": "read", "message": f.reason, "raw": f.raw}, ensure_ascii=False)
        for f in corpus.failures
    ]
    layout.write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def collect_stats(layout: OutputLayout) -> list[dict[str, Any]]:
    """Every committed shard's stats, in shard order."""
    return [layout.read_json(p) for p in layout.list(STATS_DIR, ".json")]

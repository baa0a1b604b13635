"""Preparing an output folder for a run: checks, lock, resume decisions, manifests, summary."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Any

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
from transforms.prompts import Corpus
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
    """An exclusive lock file for one run; a lock older than its heartbeat window is taken over."""

    def __init__(self, layout: OutputLayout) -> None:
        self.layout = layout
        self.path = layout.path(LOCK_FILE)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

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

    def acquire(self) -> None:
        """Take the lock or raise ``OutputError`` naming the run that holds it."""
        if self.layout.exists(self.path):
            try:
                info = self.layout.read_json(self.path)
            except (OSError, ValueError):
                info = {}
            if info and self._alive(info):
                raise OutputError(
                    f"--output {self.layout.root}: another run ({info.get('owner')}) is writing here; "
                    f"wait for it or remove {self.path} if it is gone"
                )
        self.heartbeat()

    def heartbeat(self) -> None:
        """Refresh the lock's timestamp."""
        self.layout.write_json_atomic(self.path, {"owner": self.owner, "heartbeat": time.time()})

    def release(self) -> None:
        """Remove the lock if it is ours."""
        try:
            if self.layout.read_json(self.path).get("owner") == self.owner:
                self.layout.fs.rm(self.path)
        except (OSError, ValueError):
            pass


def reset_output(layout: OutputLayout) -> None:
    """Delete everything a previous run wrote (``--overwrite``)."""
    for folder in (DATA_DIR, WDS_DIR, STATS_DIR, FAILURES_DIR, MANIFEST_DIR, TMP_DIR):
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

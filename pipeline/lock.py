"""The run lock of an output folder: one run writes into an output at a time."""

from __future__ import annotations

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

from transforms.layout import LOCK_FILE, OutputLayout

from .errors import OutputError

LOCK_STALE_SECONDS = 600


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

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

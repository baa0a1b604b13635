"""The run lock of an output folder: one run writes into an output at a time.

Local folders: ``filelock.FileLock`` (an OS ``flock``) on ``.lock``, which the kernel drops when
the process dies, so a crashed run (even ``kill -9``) never blocks the next one and a reused pid
cannot fake a live owner; the holder writes its ``host:pid`` into the file for the busy message.
Object stores (``gs://``, ``s3://``) have no OS locks: there the lock is a file with owner and
heartbeat, taken over when its process is gone (same host) or its heartbeat is older than
``LOCK_STALE_SECONDS``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from filelock import FileLock, Timeout

from transforms.shards.layout import LOCK_FILE, OutputLayout

from .errors import OutputError

LOCK_STALE_SECONDS = 600


class RunLock:
    """An exclusive lock of an output folder for one run (a context manager)."""

    def __init__(self, layout: OutputLayout) -> None:
        self.layout = layout
        self.path = layout.path(LOCK_FILE)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._file_lock = (
            FileLock(self.path, timeout=0, thread_local=False, on_acquired=self._stamp) if layout.is_local else None
        )
        self._held = False
        self._mutex = threading.Lock()  # heartbeats come from the progress thread

    def _info(self) -> dict[str, Any]:
        return {"owner": self.owner, "heartbeat": time.time()}

    def _stamp(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode("utf-8"), 0)

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.layout.read_text(self.path) or "{}")
        except (OSError, ValueError):
            return {}

    def _busy(self, info: dict[str, Any]) -> OutputError:
        return OutputError(
            f"--output {self.layout.root}: another run ({info.get('owner', 'unknown owner')}) is writing here; "
            f"wait for it to finish or stop it, then rerun (a crashed run's lock does not block)"
        )

    @staticmethod
    def _alive(info: dict[str, Any]) -> bool:
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
        if self._file_lock is not None:
            try:
                self._file_lock.acquire()
            except Timeout:
                raise self._busy(self._holder()) from None
        else:
            info = self._holder() if self.layout.exists(self.path) else {}
            if info and self._alive(info):
                raise self._busy(info)
        self._held = True
        self.heartbeat()

    def heartbeat(self) -> None:
        """Refresh the lock file's timestamp where object stores need it (no-op once released)."""
        with self._mutex:
            if self._held and self._file_lock is None:
                self.layout.write_json_atomic(self.path, self._info())

    def release(self) -> None:
        """Remove the lock file and let go of the lock, if it is ours."""
        with self._mutex:
            if not self._held:
                return
            self._held = False
            if self._file_lock is not None:
                self.layout.remove(self.path)  # while still holding it: a waiter then retries on a new file
                self._file_lock.release()
                return
            if self._holder().get("owner") == self.owner:
                self.layout.remove(self.path)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

"""A progress line while a run works: prompts done, prompts/s and ETA, from the stats markers of
committed shards plus the progress files the workers rewrite after every batch of shards in flight
(so a run of 1000-prompt shards does not read "0 prompts/s" until its first commit)."""

from __future__ import annotations

import logging
import threading
import time
from posixpath import basename

from transforms.shards.layout import PROGRESS_DIR, OutputLayout

from .lock import RunLock
from .output import collect_stats

logger = logging.getLogger(__name__)


class ProgressReporter(threading.Thread):
    """Logs progress every ``interval`` seconds by watching stats markers; refreshes the lock."""

    def __init__(self, layout: OutputLayout, total_prompts: int, lock: RunLock, interval: float = 10.0) -> None:
        super().__init__(daemon=True, name="daam-progress")
        self.layout = layout
        self.total = total_prompts
        self.lock = lock
        self.interval = interval
        self.stop_event = threading.Event()
        self.markers: dict = {}  # stats markers read so far (a marker never changes once written)
        self.started_at = time.time()
        self.done_at_start = self._done()

    def _done(self) -> int:
        """Prompts of committed shards, plus those generated so far in shards not yet committed."""
        committed = {s.shard: s.prompts for s in collect_stats(self.layout, self.markers)}
        in_flight = 0
        for path in self.layout.list(PROGRESS_DIR, ".json"):
            if basename(path).removesuffix(".json") in committed:
                continue  # committed since: its marker counts it
            try:
                in_flight += int(self.layout.read_json(path)["prompts"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours: the next tick reads it
        return sum(committed.values()) + in_flight

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.lock.heartbeat()
            done = self._done()
            rate = (done - self.done_at_start) / max(1e-9, time.time() - self.started_at)
            eta = f"{(self.total - done) / rate / 60:.1f} min" if rate > 0 else "?"
            logger.info("progress: %d/%d prompts, %.2f prompts/s, ETA %s", done, self.total, rate, eta)

    def stop(self) -> None:
        """Stop reporting."""
        self.stop_event.set()

    def __enter__(self) -> "ProgressReporter":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

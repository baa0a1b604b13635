"""Fault injection for tests, switched on by the ``DAAM_DATASETS_FAULTS`` environment variable
(``transforms.hooks.hooks_from_env``).

Syntax: ``;``-separated ``key=value`` items, e.g.
``fail_prompts=id1,id2;crash_at=after_data_rename;crash_after_shards=1``.

- ``fail_prompts``: generation raises for any batch containing one of these prompt ids.
- ``crash_at``: kill the process hard (``os._exit``) at a point: ``batch`` (mid-shard, before
  the first batch is generated), ``mid_write`` (a temp data file written, not renamed),
  ``after_data_rename`` (data in place, stats marker missing).
- ``crash_after_shards``: only crash once this many shards were committed by this process.
- ``sleep_batch``: sleep this many seconds before each batch (keeps a run busy, e.g. for lock
  and kill tests).
- ``disk_full``: writing a shard's data file fails with ``ENOSPC`` (as on a full disk) once this
  many shards were committed by this process (``disk_full=0``: the first shard).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field

from ..hooks import FAULTS_ENV_VAR as ENV_VAR
from ..hooks import RunHooks

CRASH_POINTS = ("batch", "mid_write", "after_data_rename")
CRASH_EXIT_CODE = 137
logger = logging.getLogger(__name__)


@dataclass
class FaultInjector(RunHooks):
    """Parsed fault settings plus this process's count of committed shards."""

    fail_prompts: frozenset[str] = frozenset()
    crash_at: str | None = None
    crash_after_shards: int = 0
    sleep_batch: float = 0.0
    disk_full: int | None = None
    committed: int = field(default=0, init=False)

    @classmethod
    def parse(cls, spec: str) -> "FaultInjector":
        """The injector for a ``key=value;…`` specification."""
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{ENV_VAR}: expected key=value, got {item!r}")
            values[key.strip()] = value.strip()
        unknown = set(values) - {"fail_prompts", "crash_at", "crash_after_shards", "sleep_batch", "disk_full"}
        if unknown:
            raise ValueError(f"{ENV_VAR}: unknown keys {sorted(unknown)}")
        crash_at = values.get("crash_at") or None
        if crash_at is not None and crash_at not in CRASH_POINTS:
            raise ValueError(f"{ENV_VAR}: crash_at must be one of {CRASH_POINTS}, got {crash_at!r}")
        return cls(
            fail_prompts=frozenset(filter(None, values.get("fail_prompts", "").split(","))),
            crash_at=crash_at,
            crash_after_shards=int(values.get("crash_after_shards", "0")),
            sleep_batch=float(values.get("sleep_batch", "0")),
            disk_full=int(values["disk_full"]) if values.get("disk_full") else None,
        )

    def before_batch(self, prompt_ids: list[str]) -> None:
        """Raise for an injected bad prompt; crash if ``crash_at=batch`` is due."""
        if self.sleep_batch > 0:
            time.sleep(self.sleep_batch)
        self.at("batch")
        bad = self.fail_prompts.intersection(prompt_ids)
        if bad:
            raise RuntimeError(f"injected fault for prompt {sorted(bad)[0]}")

    def at(self, point: str) -> None:
        """Exit the process at once, without cleanup, if ``point`` is the configured crash point."""
        if self.crash_at == point and self.committed >= self.crash_after_shards:
            logger.error("fault injection: crashing at %s", point)
            os._exit(CRASH_EXIT_CODE)

    def before_data_write(self, path: str) -> None:
        """Raise ``ENOSPC`` for ``path`` if ``disk_full`` is due."""
        if self.disk_full is not None and self.committed >= self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    def shard_committed(self) -> None:
        """Count a committed shard."""
        self.committed += 1


def hooks_from_env() -> RunHooks:
    """The fault injector configured in ``DAAM_DATASETS_FAULTS``, else the no-op hooks."""
    spec = os.environ.get(ENV_VAR, "").strip()
    return FaultInjector.parse(spec) if spec else RunHooks()

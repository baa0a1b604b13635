"""Points in the shard loop where a test may act. Production runs use ``RunHooks``, which does
nothing; ``hooks_from_env`` returns the test fault injector only when ``DAAM_DATASETS_FAULTS`` is
set (the crash tests run real worker processes, so the switch must cross process boundaries)."""

from __future__ import annotations

import os

FAULTS_ENV_VAR = "DAAM_DATASETS_FAULTS"


class RunHooks:
    """Called by the shard loop and the shard writer; every method is a no-op here."""

    def before_batch(self, prompt_ids: list[str]) -> None:
        """Before a batch of prompts is generated."""

    def at(self, point: str) -> None:
        """At a named point of a shard commit (``batch``, ``mid_write``, ``after_data_rename``)."""

    def before_data_write(self, path: str) -> None:
        """After a shard's temporary data file was written, before it is renamed."""

    def shard_committed(self) -> None:
        """After a shard's stats marker was written."""


def hooks_from_env() -> RunHooks:
    """The fault injector configured in the environment, else the no-op hooks."""
    spec = os.environ.get(FAULTS_ENV_VAR, "").strip()
    if not spec:
        return RunHooks()
    from .testing.faults import FaultInjector

    return FaultInjector.parse(spec)

"""Points in the shard loop where a test may act. Production runs use ``RunHooks``, which does
nothing; ``transforms.testing.faults.hooks_from_env`` returns the test fault injector instead only
when ``DAAM_DATASETS_FAULTS`` is set (the crash tests run real worker processes, so the switch must
cross process boundaries)."""

from __future__ import annotations

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

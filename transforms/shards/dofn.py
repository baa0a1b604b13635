"""The Beam side of generation: one DoFn that turns a shard id into committed shard files, with
one model per worker process (``apache_beam.utils.shared.Shared``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from schemas.output_records import ShardStats

from .layout import OutputLayout
from transforms.corpus import PromptRecord
from .generator import ShardGenerator
from .sharding import ShardSpec
from .sinks import commit_shard

logger = logging.getLogger(__name__)
NAMESPACE = "daam_datasets"
PROGRESS_LOG_SECONDS = 30.0


def read_manifest(layout: OutputLayout, spec: ShardSpec) -> list[PromptRecord]:
    """The prompts of a shard, as the driver wrote them."""
    with layout.fs.open(layout.manifest_file(spec.name), "rb") as fh:
        return [PromptRecord(**json.loads(line)) for line in fh.read().decode("utf-8").splitlines() if line]


class GenerateShardFn(beam.DoFn):
    """Generate, trace, write and commit one shard; skip shards whose stats marker exists.

    ``make_generator`` builds a ``ShardGenerator`` (loads the model); it runs in ``setup`` on the
    worker, once per process thanks to ``shared``. It is called with no arguments and must be
    picklable (a module-level function or ``functools.partial``).
    """

    def __init__(
        self,
        output: str,
        formats: tuple[str, ...],
        features_factory: Callable[[], Any],
        fingerprint: str,
        make_generator: Callable[[], ShardGenerator],
        shared: Shared,
    ) -> None:
        self.output = output
        self.formats = formats
        self.features_factory = features_factory
        self.fingerprint = fingerprint
        self.make_generator = make_generator
        self.shared = shared
        self.prompts = Metrics.counter(NAMESPACE, "prompts")
        self.images = Metrics.counter(NAMESPACE, "images")
        self.failures = Metrics.counter(NAMESPACE, "failures")
        self.shards = Metrics.counter(NAMESPACE, "shards_committed")
        self.skipped = Metrics.counter(NAMESPACE, "shards_skipped")
        self.batch_ms = Metrics.distribution(NAMESPACE, "batch_milliseconds")

    def setup(self) -> None:
        self._layout = OutputLayout(self.output)
        self._features = self.features_factory()
        self._generator = self.shared.acquire(self.make_generator, tag=self.fingerprint)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.prompts.inc(size)
        self.batch_ms.update(int(seconds * 1000))
        self._done_in_shard += size
        self._write_progress()
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_SECONDS:
            self._last_log = now
            logger.info("%s: %d/%d prompts, %.2f s/batch", self._shard, self._done_in_shard, self._shard_total, seconds)

    def _write_progress(self) -> None:
        """The shard's prompts done so far, for the driver's progress line (best effort: a
        progress file that cannot be written costs the line, never the shard)."""
        try:
            self._layout.write_json_atomic(self._layout.progress_file(self._shard), {"prompts": self._done_in_shard})
        except OSError as error:
            logger.debug("%s: progress not written: %r", self._shard, error)

    def process(self, spec: ShardSpec) -> Iterator[ShardStats]:
        if self._layout.exists(self._layout.stats_file(spec.name)):
            self.skipped.inc()
            return
        prompts = read_manifest(self._layout, spec)
        self._shard, self._shard_total, self._done_in_shard = spec.name, len(prompts), 0
        self._last_log = time.monotonic()
        result = self._generator.run_shard(spec, prompts, on_batch=self._on_batch)
        stats = commit_shard(
            self._layout, result, self.formats, self._features, self.fingerprint, self._generator.hooks
        )
        self.images.inc(stats.rows)
        self.failures.inc(stats.failed)
        self.shards.inc()
        self._layout.remove(self._layout.progress_file(spec.name))  # the stats marker counts it now
        logger.info("%s committed: %d rows, %d failed, %.1fs", spec.name, stats.rows, stats.failed, result.seconds)
        yield stats

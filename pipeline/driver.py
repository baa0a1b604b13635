"""``daam-datasets run``: read the corpus, plan shards, run the Beam pipeline, summarise."""

from __future__ import annotations

import functools
import logging
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.shared import Shared

from schemas.record import SCHEMA_VERSION, build_features
from transforms.hooks import hooks_from_env
from transforms.shard_generator import ShardGenerator
from transforms.layout import CARD_FILE, RUN_FILE, OutputLayout
from transforms.model_loading import load_pipeline, model_geometry, resolve_model_source
from transforms.prompts import read_corpus
from transforms.shard_dofn import GenerateShardFn
from transforms.sharding import ShardSpec, plan_shards

from . import output as out
from .card import PREVIEW_IMAGE, render_card
from .errors import RunFailed
from .lock import RunLock
from .options import RunSettings

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run produced (also written to run.json)."""

    output: str
    rows: int
    prompts: int
    failed: int
    read_failures: int
    blank: int
    shards: int
    shards_skipped: int
    seconds: float
    metrics: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary printed at the end."""
        return (
            f"{self.rows} rows written, {self.shards_skipped} shards skipped (already done), "
            f"{self.failed + self.read_failures} prompts failed, {self.blank} blank rows skipped "
            f"-> {self.output} ({self.seconds:.1f}s)"
        )


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the output."""
    import importlib.metadata as md

    names = ("torch", "diffusers", "transformers", "apache-beam", "pyarrow", "datasets", "webdataset", "numpy")
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def beam_counters(result: Any) -> dict[str, int]:
    """Committed values of our Beam counters (empty where a runner does not report metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.shard_dofn import NAMESPACE

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def build_generator(settings_dict: dict[str, Any]) -> ShardGenerator:
    """Load the model and make a ``ShardGenerator`` (runs on the worker, once per process)."""
    import torch

    settings = RunSettings.from_dict(settings_dict)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    pipe = load_pipeline(settings.model)
    return ShardGenerator(
        pipe, settings.generation, settings.batch_size, settings.map_dtype, hooks_from_env()
    )


class ProgressReporter(threading.Thread):
    """Logs shards/prompts done, images/s and ETA by watching stats markers; refreshes the lock."""

    def __init__(self, layout: OutputLayout, total_prompts: int, lock: RunLock, interval: float = 10.0) -> None:
        super().__init__(daemon=True, name="daam-progress")
        self.layout = layout
        self.total = total_prompts
        self.lock = lock
        self.interval = interval
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.done_at_start = self._done()

    def _done(self) -> int:
        return sum(s.prompts for s in out.collect_stats(self.layout))

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.lock.heartbeat()
            done = self._done()
            rate = (done - self.done_at_start) / max(1e-9, time.time() - self.started_at)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            eta_text = f"{eta / 60:.1f} min" if eta != float("inf") else "?"
            logger.info("progress: %d/%d prompts, %.2f prompts/s, ETA %s", done, self.total, rate, eta_text)

    def stop(self) -> None:
        """Stop reporting."""
        self.stop_event.set()


def build_graph(
    pipeline: beam.Pipeline,
    pending: Sequence[ShardSpec],
    settings: RunSettings,
    map_size: tuple[int, int],
    fingerprint: str,
) -> beam.PCollection:
    """Shard ids → spread over workers → generate, trace, write and commit each shard."""
    features_factory = functools.partial(build_features, map_size[0], map_size[1], settings.map_dtype)
    make_generator = functools.partial(build_generator, settings.to_dict())
    return (
        pipeline
        | "ShardIds" >> beam.Create(list(pending))
        | "SpreadShards" >> beam.Reshuffle()
        | "GenerateAndTrace"
        >> beam.ParDo(
            GenerateShardFn(settings.output, settings.formats, features_factory, fingerprint, make_generator, Shared())
        )
    )


def run(settings: RunSettings, beam_options: PipelineOptions, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run (or resume) a dataset build; raises ``RunFailed`` above the failure-rate limit."""
    started = time.time()
    corpus = read_corpus(settings.prompts, settings.seed, settings.columns, settings.limit, settings.split)
    out.require_prompts(corpus, settings.prompts)
    source = resolve_model_source(settings.model.model, settings.model.revision)
    default_h, default_w, scale = model_geometry(settings.model, source)
    height = settings.generation.height or default_h
    width = settings.generation.width or default_w
    map_size = (height // scale, width // scale)

    layout = OutputLayout(settings.output)
    out.check_output_path(layout)
    lock = RunLock(layout)
    lock.acquire()
    try:
        fingerprint = settings.output_fingerprint(out.corpus_digest(corpus))
        out.check_resume(layout, fingerprint, settings.overwrite)
        out.clean_temporaries(layout)
        specs = plan_shards(len(corpus.prompts), settings.shard_size, settings.num_shards)
        done = out.committed_shards(layout)
        pending = [s for s in specs if s.name not in done]
        out.write_read_failures(layout, corpus)
        out.write_manifests(layout, corpus, pending)
        run_info = {
            "fingerprint": fingerprint,
            "schema_version": SCHEMA_VERSION,
            "settings": settings.to_dict(),
            "versions": library_versions(),
            "image_size": [height, width],
            "map_size": list(map_size),
            "shards": len(specs),
            "status": "running",
        }
        if pending or not layout.exists(layout.path(RUN_FILE)):
            layout.write_json_atomic(layout.path(RUN_FILE), run_info)
        if pending and not layout.exists(layout.path(CARD_FILE)):
            out.write_incomplete_card(layout)  # a crashed or failed first run must not load as a dataset
        logger.info(
            "%d prompts in %d shards (%d to do, %d already committed); %d unreadable rows, %d blank",
            len(corpus.prompts), len(specs), len(pending), len(specs) - len(pending), len(corpus.failures), corpus.blank,
        )
        metrics: dict[str, int] = {}
        if pending:
            progress = ProgressReporter(layout, len(corpus.prompts), lock)
            progress.start()
            try:
                pipeline = test_pipeline or beam.Pipeline(options=beam_options)
                build_graph(pipeline, pending, settings, map_size, fingerprint)
                result = pipeline.run()
                result.wait_until_finish()
                metrics = beam_counters(result)
            except Exception as error:  # runners wrap worker errors (full traceback with -v)
                logger.debug("pipeline failed", exc_info=True)
                raise RunFailed(
                    f"the pipeline failed: {_failure_reason(error)}; committed shards are kept: fix the cause "
                    f"and rerun the same command to resume"
                ) from error
            finally:
                progress.stop()
        stats = out.collect_stats(layout)
        missing = {s.name for s in specs} - {s.shard for s in stats}
        if missing:
            raise RunFailed(f"{len(missing)} shards were not committed (e.g. {sorted(missing)[0]}); rerun the same command to finish them")
        summary = RunSummary(
            output=settings.output,
            rows=sum(s.rows for s in stats),
            prompts=len(corpus.prompts),
            failed=sum(s.failed for s in stats),
            read_failures=len(corpus.failures),
            blank=corpus.blank,
            shards=len(specs),
            shards_skipped=len(specs) - len(pending),
            seconds=time.time() - started,
            metrics=metrics,
        )
        if metrics:
            logger.info("beam metrics: %s", ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
        parquet_bytes = sum(s.file_bytes("parquet") for s in stats)
        card_summary = {
            "rows": summary.rows,
            "failed": summary.failed + summary.read_failures,
            "shards": summary.shards,
            "formats": list(settings.formats),
            "parquet_bytes": parquet_bytes,
            "map_size": list(map_size),
            "image_size": [height, width],
        }
        features = build_features(map_size[0], map_size[1], settings.map_dtype)
        preview = PREVIEW_IMAGE if layout.exists(layout.path(PREVIEW_IMAGE)) else None  # kept across reruns
        card = render_card(features, card_summary, settings.to_dict(), settings.dataset_license, preview)
        if not (layout.exists(layout.path(CARD_FILE)) and _same_text(layout, CARD_FILE, card)):
            layout.write_bytes_atomic(layout.path(CARD_FILE), card.encode("utf-8"))
        run_info.update(status="complete", summary={k: v for k, v in summary.__dict__.items() if k not in ("seconds", "shards_skipped", "metrics")})
        if pending or layout.read_json(layout.path(RUN_FILE)) != run_info:
            layout.write_json_atomic(layout.path(RUN_FILE), run_info)
        out.clean_temporaries(layout)
    finally:
        lock.release()
    total = summary.prompts + summary.read_failures
    failed = summary.failed + summary.read_failures
    if total and failed / total > settings.max_failure_rate:
        raise RunFailed(
            f"{failed} of {total} prompts failed ({failed / total:.1%} > --max-failure-rate "
            f"{settings.max_failure_rate:.1%}); see {settings.output}/_failures/"
        )
    return summary


def _failure_reason(error: BaseException) -> str:
    """The last line of a (runner-wrapped) exception message: the original error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _same_text(layout: OutputLayout, name: str, text: str) -> bool:
    with layout.fs.open(layout.path(name), "rb") as fh:
        return fh.read().decode("utf-8") == text

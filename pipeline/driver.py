"""``daam-datasets run`` on the driver: prepare the output, execute the Beam graph, finalise.

- **prepare**: read and validate the corpus, resolve the model's geometry, take the output's lock,
  check resume, plan shards and write each pending shard's prompts to ``_manifest/``;
- **execute**: run ``pipeline.graph`` on the Beam runner (workers commit shards themselves);
- **finalise**: check every shard is committed, write the card and ``run.json``, summarise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.maps import check_map_size
from schemas.output_records import RunInfo
from schemas.record import SCHEMA_VERSION
from transforms.shards.layout import CARD_FILE, ID2LABEL_FILE, RUN_FILE, OutputLayout
from transforms.models.family import check_family_settings, double_stream_blocks, family_of
from transforms.models.loading import model_geometry, resolve_model_source
from transforms.trace_selection import resolve_selection
from transforms.corpus import CorpusScan, scan_corpus
from transforms.corpus.processes import default_workers
from transforms.shards.sharding import ShardSpec, plan_shards

from . import output as out
from .card import PREVIEW_IMAGE, id2label, output_card, unfinished_card, write_card
from .errors import RunFailed
from .graph import build_graph
from .lock import RunLock
from .options import RunSettings
from .ownership import require_usable_output
from .progress import ProgressReporter
from .summary import RunSummary, beam_counters, library_versions

logger = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What the driver decided before any model work: corpus, geometry, shards, run record."""

    settings: RunSettings
    corpus: CorpusScan
    layout: OutputLayout
    image_size: tuple[int, int]
    map_size: tuple[int, int]
    specs: list[ShardSpec]
    pending: list[ShardSpec]
    info: RunInfo


def plan_workers(settings: RunSettings) -> int:
    """The processes that plan on this machine (``--plan-workers``, else its cores up to 8)."""
    return settings.plan_workers or default_workers()


def read_inputs(settings: RunSettings) -> tuple[CorpusScan, tuple[int, int], tuple[int, int], dict | None]:
    """The corpus scanned in one streaming pass (refused if it has no usable prompt; the caller
    closes it), image size, map size and the trace
    selection resolved for the model. A size the model cannot take, a selection that traces
    nothing (``transforms.trace_selection``) or one generation the device cannot hold is refused
    here, before anything is allocated or written (``transforms.models.memory``; a model family's own
    limits, ``model_family``)."""
    corpus = scan_corpus(settings.prompts, settings.seed, settings.columns, settings.limit, settings.split, workers=plan_workers(settings))
    try:
        out.require_prompts(corpus, settings.prompts)
        return (corpus, *_model_inputs(settings, corpus.num_prompts))
    except BaseException:
        corpus.close()
        raise


def _model_inputs(settings: RunSettings, prompts: int) -> tuple[tuple[int, int], tuple[int, int], dict | None]:
    """Image size, map size and trace selection for the model (refusals before any work)."""
    source = resolve_model_source(settings.model.model, settings.model.revision)
    default_h, default_w, scale = model_geometry(settings.model, source)
    height = settings.generation.height or default_h
    width = settings.generation.width or default_w
    if height % scale or width % scale:
        raise ValueError(f"--height/--width must be multiples of {scale} for this model (one attention map cell "
                         f"is {scale}x{scale} pixels); got {width}x{height}")
    family = family_of(source)
    segmentation = settings.segmentation_config
    check_family_settings(family, (height, width), (default_h, default_w), settings.model.scheduler,
                          bool(segmentation and segmentation.refine), settings.generation.negative_prompt,
                          settings.generation.concepts is not None, source)
    if settings.generation.concepts is not None:
        blocks = double_stream_blocks(source)
        if blocks is not None:
            settings.generation.concepts.block_indices(blocks)  # --concept-blocks within the model, before any work
    grid = (height // scale, width // scale)
    check_map_size(grid, settings.map_size)
    selection = resolve_selection(source, settings.model.revision, settings.generation)
    if family.sd_memory_model:
        _require_fits(settings, source, (height, width), prompts)
    return (height, width), grid, selection


def _require_fits(settings: RunSettings, source: str, size: tuple[int, int], prompts: int) -> None:
    """The memory estimate of one generation against the device (``transforms.models.memory``)."""
    from transforms.models.memory import model_configs, require_generation_fits

    shards = plan_shards(prompts, settings.shard_size, settings.num_shards)
    segmentation = {"segmentation": settings.segmentation_config} if settings.segmentation else {}
    require_generation_fits(
        model_configs(source, settings.model.revision), settings.generation, size,
        batch_size=settings.batch_size, prompts=prompts, shard_prompts=max(s.stop - s.start for s in shards),
        dtype=settings.model.dtype, device=settings.model.resolved_device(), map_dtype=settings.map_dtype, **segmentation,
    )


def prepare(settings: RunSettings, corpus: CorpusScan, image_size: tuple[int, int], map_size: tuple[int, int],
            selection: dict | None = None) -> RunPlan:
    """Under the lock: shard plan, manifests streamed from the scan (with the prompts' digest),
    resume checks, failure records of the read, run.json.

    The manifests of pending shards are written before the fingerprint is compared with an earlier
    run's: every prepare rewrites them, so a refused rerun leaves nothing an earlier run needs."""
    layout = OutputLayout(settings.output)
    if settings.overwrite:
        out.reset_output(layout)
    specs = plan_shards(corpus.num_prompts, settings.shard_size, settings.num_shards)
    done = out.committed_shards(layout)
    pending = [s for s in specs if s.name not in done]
    out.clean_temporaries(layout)
    digest = out.write_scan_manifests(layout, corpus, specs, {s.name for s in pending}, plan_workers(settings))
    fingerprint = settings.output_fingerprint(digest)
    out.check_resume(layout, fingerprint)
    out.write_read_failures(layout, corpus)
    info = RunInfo(
        fingerprint=fingerprint,
        schema_version=SCHEMA_VERSION,
        settings=settings.to_dict(),
        versions=library_versions(),
        image_size=list(image_size),
        map_size=list(map_size),
        shards=len(specs),
        trace=selection,
    )
    if pending or not layout.exists(layout.path(RUN_FILE)):
        layout.write_json_atomic(layout.path(RUN_FILE), info.to_dict())
    if pending and not layout.exists(layout.path(CARD_FILE)):
        write_card(layout, unfinished_card())  # a crashed or failed first run must not load as a dataset
    logger.info(
        "%d prompts in %d shards (%d to do, %d already committed); %d unreadable rows, %d blank",
        corpus.num_prompts, len(specs), len(pending), len(specs) - len(pending), len(corpus.failures), corpus.blank,
    )
    return RunPlan(settings, corpus, layout, image_size, map_size, specs, pending, info)


def execute(plan: RunPlan, beam_options: PipelineOptions, lock: RunLock, test_pipeline: beam.Pipeline | None = None) -> dict[str, int]:
    """Run the Beam graph over the pending shards; Beam counters (``RunFailed`` if the runner fails)."""
    if not plan.pending:
        return {}
    with ProgressReporter(plan.layout, plan.corpus.num_prompts, lock):
        try:
            pipeline = test_pipeline or beam.Pipeline(options=beam_options)
            build_graph(pipeline, plan.pending, plan.settings, plan.map_size, plan.info.fingerprint)
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as error:  # runners wrap worker errors (full traceback with -v)
            logger.debug("pipeline failed", exc_info=True)
            raise RunFailed(
                f"the pipeline failed: {_failure_reason(error)}; committed shards are kept: fix the cause "
                f"and rerun the same command to resume"
            ) from error
    metrics = beam_counters(result)
    if metrics:
        logger.info("beam metrics: %s", ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    return metrics


def finalise(plan: RunPlan, metrics: dict[str, int], started: float) -> RunSummary:
    """Check every shard is committed, then write the card and the completed run.json."""
    layout = plan.layout
    stats = out.collect_stats(layout)
    missing = {s.name for s in plan.specs} - {s.shard for s in stats}
    if missing:
        raise RunFailed(f"{len(missing)} shards were not committed (e.g. {sorted(missing)[0]}); rerun the same command to finish them")
    summary = RunSummary(
        output=plan.settings.output,
        rows=sum(s.rows for s in stats),
        prompts=plan.corpus.num_prompts,
        failed=sum(s.failed for s in stats),
        read_failures=len(plan.corpus.failures),
        blank=plan.corpus.blank,
        input_rows=plan.corpus.rows_read,
        shards=len(plan.specs),
        shards_skipped=len(plan.specs) - len(plan.pending),
        seconds=time.time() - started,
        stopped_at_limit=plan.corpus.stopped_at_limit,
        metrics=metrics,
    )
    plan.info.status, plan.info.summary = "complete", summary.counts()
    preview = PREVIEW_IMAGE if layout.exists(layout.path(PREVIEW_IMAGE)) else None  # kept across reruns
    run_file = layout.path(RUN_FILE)
    if plan.pending or layout.read_json(run_file) != plan.info.to_dict():
        layout.write_json_atomic(run_file, plan.info.to_dict())
    if plan.settings.segmentation:
        out.write_json_if_changed(layout, ID2LABEL_FILE, id2label(plan.settings.segmentation))
    write_card(layout, output_card(layout, stats, preview))
    out.clean_temporaries(layout)
    return summary


def run(settings: RunSettings, beam_options: PipelineOptions, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run (or resume) a dataset build; raises ``RunFailed`` above the failure-rate limit."""
    started = time.time()
    layout = OutputLayout(settings.output)
    require_usable_output(layout)  # a folder of a user's files is refused before any work, untouched
    corpus, image_size, map_size, selection = read_inputs(settings)
    with corpus:
        out.check_output_path(layout)
        with RunLock(layout) as lock:
            plan = prepare(settings, corpus, image_size, map_size, selection)
            corpus.close()  # the manifests hold the prompts now: the spill goes before generation
            metrics = execute(plan, beam_options, lock, test_pipeline)
            summary = finalise(plan, metrics, started)
    if summary.failure_rate > settings.max_failure_rate:
        failed, total = summary.failed + summary.read_failures, summary.prompts + summary.read_failures
        raise RunFailed(
            f"{failed} of {total} prompts failed ({summary.failure_rate:.1%} > --max-failure-rate "
            f"{settings.max_failure_rate:.1%}); see {settings.output}/_failures/"
        )
    return summary


def _failure_reason(error: BaseException) -> str:
    """The last line of a (runner-wrapped) exception message: the original error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

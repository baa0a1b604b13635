"""Turn a shard's prompts into records on one worker: batched traced generation with per-prompt
failure isolation (a failing batch is retried one prompt at a time).

Records are encoded (PNG, maps, overlay) on a background thread while the next batch is
generated; at most ``encode_queue`` generated batches wait for it, so memory stays bounded and the
records come out in the order the synchronous loop gives (byte-identical shards).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from schemas.maps import encode_maps, stored_map_size
from schemas.record import Record, encode_png

from schemas.output_records import FailureRecord

from transforms.attribution import GenerationConfig, TracedSample, generate_traced
from transforms.attribution.class_maps import SampleSegmentation
from transforms.attribution.config import SegmentationConfig
from transforms.attribution.heatmap import expand_map
from transforms.attribution.overlay import encode_jpeg, words_overlay
from transforms.hooks import RunHooks
from transforms.corpus import PromptRecord
from .results import PromptFailure, ShardResult
from .sharding import ShardSpec

logger = logging.getLogger(__name__)
ENCODE_QUEUE_BATCHES = 2  # generated batches that may wait for the encoder thread
BATCH_ERRORS = (PromptFailure, RuntimeError, ValueError, IndexError)  # a batch's failure: retried per prompt


def row_id(prompt_id: str, image_index: int) -> str:
    """Row id: the prompt id for its first image, ``id#k`` for image ``k`` > 0."""
    return prompt_id if image_index == 0 else f"{prompt_id}#{image_index}"


def resize_maps(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``(..., h, w)`` resized to ``size`` (height, width) as ``heatmap.expand_map`` resizes
    (bicubic), clamped at zero, float32; maps already of that size are returned as they are."""
    maps = torch.as_tensor(maps)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    flat = maps.reshape(-1, *maps.shape[-2:])
    resized = torch.stack([expand_map(m, size) for m in flat]) if len(flat) else flat.float().new_zeros((0, *size))
    return resized.clamp_min(0).reshape(*maps.shape[:-2], *size)


def stored_maps(maps: torch.Tensor | np.ndarray, map_dtype: str, map_size: int | None, what: str,
                stage: str = "attribution") -> tuple[np.ndarray, np.ndarray | None]:
    """Maps ``(..., h, w)`` as stored: resized for ``--map-size`` and encoded in ``map_dtype``
    (``schemas.maps.encode_maps``); ``PromptFailure`` at ``stage`` for non-finite values."""
    if map_size is not None:
        maps = resize_maps(maps, stored_map_size(maps.shape[-2:], map_size))
    source = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    values, scale = encode_maps(source, map_dtype)
    if not np.isfinite(source).all() or (scale is None and not np.isfinite(values).all()):
        raise PromptFailure(stage, f"{what} contain NaN or infinite values")
    return values, scale


def add_overlay(record: Record, image: Any, maps: np.ndarray) -> None:
    """Fill a record's ``overlay`` (JPEG) and ``overlay_words`` from the image and its float maps."""
    picture, words = words_overlay(image, maps, record.words)
    try:
        record.overlay_jpeg = encode_jpeg(picture)
    except (OSError, ValueError) as error:
        raise PromptFailure("encoding", f"cannot encode the overlay as JPEG: {error}") from error
    record.overlay_words = words


def to_record(prompt: PromptRecord, sample: TracedSample, map_dtype: str, negative_prompt: str = "", *,
              map_size: int | None = None, overlay: bool = False) -> Record:
    """Encode one traced sample as a dataset record, rejecting non-finite maps or images.

    ``negative_prompt`` is the one generation used (the row's own or the run's default); maps are
    stored at ``map_size`` (``--map-size``; ``None``: the map grid) in ``map_dtype``; ``overlay``
    adds the overlay columns.
    """
    heat_map = sample.heat_map
    maps, scale = stored_maps(heat_map.token_maps, map_dtype, map_size, "token maps")
    if not np.isfinite(sample.image).all():
        raise PromptFailure("generation", "image contains NaN or infinite values")
    image = sample.pil_image()
    try:
        png = encode_png(np.asarray(image))
    except (OSError, ValueError) as error:
        raise PromptFailure("encoding", f"cannot encode the image as PNG: {error}") from error
    tokenized = heat_map.prompt
    record = Record(
        id=row_id(prompt.id, sample.image_index),
        prompt_id=prompt.id,
        prompt=prompt.prompt,
        negative_prompt=negative_prompt,
        seed=sample.seed,
        image_index=sample.image_index,
        png=png,
        tokens=tokenized.display_tokens,
        token_ids=tokenized.token_ids,
        token_maps=maps,
        words=[{"word": w.word, "start": w.start, "end": w.end} for w in tokenized.words],
        truncated=tokenized.truncated,
        token_map_scale=scale,
    )
    if overlay:
        add_overlay(record, image, heat_map.token_maps.detach().float().cpu().numpy())
    if sample.timestep_maps is not None:
        record.timestep_maps, record.timestep_map_scale = stored_maps(
            sample.timestep_maps, map_dtype, map_size, "per-timestep maps"
        )
    if sample.concept_maps is not None:
        record.concepts = list(sample.concepts or [])
        record.concept_maps, record.concept_map_scale = stored_maps(sample.concept_maps, map_dtype, map_size, "concept maps")
    if sample.segmentation is not None:
        add_segmentation(record, sample.segmentation, map_dtype, map_size)
    return record


def class_entries(segmentation: SampleSegmentation) -> list[dict[str, Any]]:
    """The row's ``classes`` column: per class its label, name, token spans and statistics."""
    entries = []
    for label, quality in zip(segmentation.labels, segmentation.quality):
        spans = [m.token_span for m in segmentation.matches if m.label == label]
        entries.append(
            {
                "label": label,
                "name": next(m.name for m in segmentation.matches if m.label == label),
                "spans": [{"start": start, "end": end} for start, end in spans],
                "peak": quality.peak,
                "area": quality.area,
                "ignore_fraction": quality.ignore_fraction,
                "agreement": quality.agreement,
            }
        )
    return entries


def add_segmentation(record: Record, segmentation: SampleSegmentation, map_dtype: str, map_size: int | None = None) -> None:
    """Fill a record's ``classes``, ``class_maps`` (as ``to_record`` stores maps) and ``label``
    (``PromptFailure`` if not finite)."""
    record.class_maps, record.class_map_scale = stored_maps(
        np.asarray(segmentation.class_maps, dtype=np.float32), map_dtype, map_size, "class maps", "segmentation"
    )
    record.classes = class_entries(segmentation)
    record.label_png = encode_png(np.asarray(segmentation.label_map, dtype=np.uint8))


def host_sample(sample: TracedSample) -> TracedSample:
    """``sample`` with its maps on the host: one device-to-host copy per image, made on the
    generating thread (an encoder thread's copy would queue behind the next batch's kernels)."""
    heat_map = dataclasses.replace(sample.heat_map, maps=sample.heat_map.maps.cpu())
    binned = None if sample.timestep_maps is None else sample.timestep_maps.cpu()
    concept_maps = None if sample.concept_maps is None else sample.concept_maps.cpu()
    return dataclasses.replace(sample, heat_map=heat_map, timestep_maps=binned, concept_maps=concept_maps)


@dataclass
class _Batch:
    """A generated batch on its way to records: its prompts, the encoder's future (``None`` when
    generation failed: ``error``) and the seconds it took to generate."""

    prompts: Sequence[PromptRecord]
    records: "Future[list[Record]] | None" = None
    error: Exception | None = None
    seconds: float = 0.0


@dataclass
class ShardGenerator:
    """Generates shards with one loaded pipeline; safe to share between threads (one lock).

    ``encode_queue``: generated batches that may wait for the encoder thread (``0``: each batch is
    encoded before the next is generated).
    """

    pipe: Any
    config: GenerationConfig
    batch_size: int = 1
    map_dtype: str = "float16"
    hooks: RunHooks = field(default_factory=RunHooks)
    segmentation: SegmentationConfig | None = None
    map_size: int | None = None  # the run's --map-size and --overlay (``to_record``)
    overlay: bool = False
    encode_queue: int = ENCODE_QUEUE_BATCHES

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        if self.encode_queue < 0:
            raise ValueError(f"encode_queue must be >= 0, got {self.encode_queue}")

    def _generate(self, prompts: Sequence[PromptRecord]) -> list[TracedSample]:
        self.hooks.before_batch([p.id for p in prompts])
        extra = {"segmentation": self.segmentation} if self.segmentation is not None else {}
        with self._lock:
            samples = generate_traced(
                self.pipe,
                [p.prompt for p in prompts],
                [p.seed for p in prompts],
                self.config,
                negative_prompts=[p.negative_prompt or None for p in prompts],
                **extra,
            )
        return [host_sample(s) for s in samples]

    def _negative(self, prompt: PromptRecord) -> str:
        return prompt.negative_prompt or self.config.negative_prompt or ""

    def _encode(self, prompts: Sequence[PromptRecord], samples: Sequence[TracedSample]) -> list[Record]:
        return [
            to_record(prompts[s.prompt_index], s, self.map_dtype, self._negative(prompts[s.prompt_index]),
                      map_size=self.map_size, overlay=self.overlay)
            for s in samples
        ]

    def _records_for(self, prompts: Sequence[PromptRecord]) -> list[Record]:
        return self._encode(prompts, self._generate(prompts))

    def _one(self, prompt: PromptRecord, shard: str) -> tuple[list[Record], FailureRecord | None]:
        try:
            return self._records_for([prompt]), None
        except PromptFailure as error:
            return [], FailureRecord(prompt.id, error.stage, str(error), prompt=prompt.prompt, shard=shard)
        except (RuntimeError, ValueError, IndexError) as error:
            message = f"{type(error).__name__}: {error}"
            return [], FailureRecord(prompt.id, "generation", message, prompt=prompt.prompt, shard=shard)

    def _submit(self, encoder: ThreadPoolExecutor, prompts: Sequence[PromptRecord]) -> _Batch:
        """Generate a batch on this thread and hand its encoding to ``encoder``."""
        batch = _Batch(prompts)
        start = time.perf_counter()
        try:
            batch.records = encoder.submit(self._encode, prompts, self._generate(prompts))
        except BATCH_ERRORS as error:
            batch.error = error
        batch.seconds = time.perf_counter() - start
        return batch

    def _finish(self, batch: _Batch, result: ShardResult, on_batch: Callable[[int, float], None] | None) -> None:
        """Collect a batch's records in order (waiting for the encoder); a batch whose generation
        or encoding failed is retried one prompt at a time, here. Other errors of the encoder
        thread are raised here, as the synchronous loop raised them."""
        name = result.spec.name
        error = batch.error
        if batch.records is not None:
            try:
                result.records.extend(batch.records.result())
            except BATCH_ERRORS as failed:
                error = failed
        start = time.perf_counter()
        if error is not None:
            logger.warning("%s: batch of %d failed (%s); retrying one prompt at a time", name, len(batch.prompts), error)
            for prompt in batch.prompts:
                records, failure = self._one(prompt, name)
                result.records.extend(records)
                if failure:
                    logger.error("%s: prompt %s failed at %s: %s", name, prompt.id, failure.stage, failure.message)
                    result.failures.append(failure)
        if on_batch:
            on_batch(len(batch.prompts), batch.seconds + time.perf_counter() - start)

    def run_shard(
        self,
        spec: ShardSpec,
        prompts: Sequence[PromptRecord],
        on_batch: Callable[[int, float], None] | None = None,
    ) -> ShardResult:
        """Generate every prompt of a shard in batches, encoding each batch's records on a
        background thread while the next one is generated; failures become records, not
        exceptions. ``on_batch(prompts, seconds)`` follows each batch once its records are in."""
        result = ShardResult(spec)
        started = time.perf_counter()
        waiting: deque[_Batch] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="daam-encode") as encoder:
            for begin in range(0, len(prompts), self.batch_size):
                waiting.append(self._submit(encoder, prompts[begin : begin + self.batch_size]))
                while len(waiting) > self.encode_queue:
                    self._finish(waiting.popleft(), result, on_batch)
            while waiting:
                self._finish(waiting.popleft(), result, on_batch)
        result.seconds = time.perf_counter() - started
        return result

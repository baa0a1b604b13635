"""Turn a shard's prompts into records on one worker: batched traced generation with per-prompt
failure isolation (a failing batch is retried one prompt at a time)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from schemas.maps import encode_maps, stored_map_size
from schemas.record import Record, encode_png

from schemas.output_records import FailureRecord

from .attribution import GenerationConfig, TracedSample, generate_traced
from .attribution.class_maps import SampleSegmentation
from .attribution.config import SegmentationConfig
from .attribution.heatmap import expand_map
from .attribution.overlay import encode_jpeg, words_overlay
from .hooks import RunHooks
from .corpus import PromptRecord
from .results import PromptFailure, ShardResult
from .sharding import ShardSpec

logger = logging.getLogger(__name__)


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


@dataclass
class ShardGenerator:
    """Generates shards with one loaded pipeline; safe to share between threads (one lock)."""

    pipe: Any
    config: GenerationConfig
    batch_size: int = 1
    map_dtype: str = "float16"
    hooks: RunHooks = field(default_factory=RunHooks)
    segmentation: SegmentationConfig | None = None
    map_size: int | None = None  # the run's --map-size and --overlay (``to_record``)
    overlay: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _generate(self, prompts: Sequence[PromptRecord]) -> list[TracedSample]:
        self.hooks.before_batch([p.id for p in prompts])
        extra = {"segmentation": self.segmentation} if self.segmentation is not None else {}
        with self._lock:
            return generate_traced(
                self.pipe,
                [p.prompt for p in prompts],
                [p.seed for p in prompts],
                self.config,
                negative_prompts=[p.negative_prompt or None for p in prompts],
                **extra,
            )

    def _negative(self, prompt: PromptRecord) -> str:
        return prompt.negative_prompt or self.config.negative_prompt or ""

    def _records_for(self, prompts: Sequence[PromptRecord]) -> list[Record]:
        samples = self._generate(prompts)
        return [
            to_record(prompts[s.prompt_index], s, self.map_dtype, self._negative(prompts[s.prompt_index]),
                      map_size=self.map_size, overlay=self.overlay)
            for s in samples
        ]

    def _one(self, prompt: PromptRecord, shard: str) -> tuple[list[Record], FailureRecord | None]:
        try:
            return self._records_for([prompt]), None
        except PromptFailure as error:
            return [], FailureRecord(prompt.id, error.stage, str(error), prompt=prompt.prompt, shard=shard)
        except (RuntimeError, ValueError, IndexError) as error:
            message = f"{type(error).__name__}: {error}"
            return [], FailureRecord(prompt.id, "generation", message, prompt=prompt.prompt, shard=shard)

    def run_shard(
        self,
        spec: ShardSpec,
        prompts: Sequence[PromptRecord],
        on_batch: Callable[[int, float], None] | None = None,
    ) -> ShardResult:
        """Generate every prompt of a shard in batches; failures become records, not exceptions."""
        result = ShardResult(spec)
        started = time.perf_counter()
        for begin in range(0, len(prompts), self.batch_size):
            batch = prompts[begin : begin + self.batch_size]
            t0 = time.perf_counter()
            try:
                result.records.extend(self._records_for(batch))
            except (PromptFailure, RuntimeError, ValueError, IndexError) as error:
                logger.warning("%s: batch of %d failed (%s); retrying one prompt at a time", spec.name, len(batch), error)
                for prompt in batch:
                    records, failure = self._one(prompt, spec.name)
                    result.records.extend(records)
                    if failure:
                        logger.error("%s: prompt %s failed at %s: %s", spec.name, prompt.id, failure.stage, failure.message)
                        result.failures.append(failure)
            if on_batch:
                on_batch(len(batch), time.perf_counter() - t0)
        result.seconds = time.perf_counter() - started
        return result

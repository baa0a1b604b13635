"""Deterministic shard plans: the same prompts and options always give the same shards."""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.output_records import shard_name

from transforms.corpus import PromptRecord

DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its number, the shard count and the prompts (by input order) it holds."""

    index: int
    count: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """``train-00003-of-00016``: the stem of every file of this shard."""
        return shard_name(self.index, self.count)


def plan_shards(num_prompts: int, shard_size: int | None = None, num_shards: int | None = None) -> list[ShardSpec]:
    """Split ``num_prompts`` prompts (in input order) into contiguous, never-empty shards.

    Give ``shard_size`` (prompts per shard) or ``num_shards``; ``num_shards`` is capped at the
    number of prompts so that no shard is empty.
    """
    if shard_size is not None and num_shards is not None:
        raise ValueError("give --shard-size or --num-shards, not both")
    if num_prompts <= 0:
        return []
    if num_shards is not None:
        if num_shards < 1:
            raise ValueError(f"--num-shards must be >= 1, got {num_shards}")
        count = min(num_shards, num_prompts)
        bounds = [round(i * num_prompts / count) for i in range(count + 1)]
    else:
        size = shard_size or DEFAULT_SHARD_SIZE
        if size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {size}")
        count = math.ceil(num_prompts / size)
        bounds = [min(i * size, num_prompts) for i in range(count + 1)]
    return [ShardSpec(i, count, bounds[i], bounds[i + 1]) for i in range(count)]


def shard_prompts(prompts: list[PromptRecord], spec: ShardSpec) -> list[PromptRecord]:
    """The prompts of one shard."""
    return prompts[spec.start : spec.stop]

"""The Beam graph: shard descriptors in, committed shards' stats out.

``Create(pending shards) → GenerateAndCommitShards`` where ``GenerateAndCommitShards`` is
``Reshuffle`` (spread the shards over workers) → ``GenerateAndTrace`` (per shard, on a worker
holding one shared model: batched traced generation, shard files written and committed). Nothing
big goes through a shuffle: the worker that made a shard's images writes them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import apache_beam as beam
from apache_beam.utils.shared import Shared

from schemas.record import run_features
from transforms.models.loading import load_pipeline
from transforms.shards.dofn import GenerateShardFn
from transforms.shards.generator import ShardGenerator
from transforms.shards.sharding import ShardSpec
from transforms.testing.faults import hooks_from_env

from .options import RunSettings


def build_generator(settings_dict: dict[str, Any]) -> ShardGenerator:
    """Load the model and make a ``ShardGenerator`` (runs on the worker, once per process)."""
    import torch

    settings = RunSettings.from_dict(settings_dict)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    pipe = load_pipeline(settings.model)
    return ShardGenerator(
        pipe, settings.generation, settings.batch_size, settings.map_dtype, hooks_from_env(), settings.segmentation_config,
        map_size=settings.map_size, overlay=settings.overlay,
    )


class GenerateAndCommitShards(beam.PTransform):
    """Shard descriptors → spread over workers → generate, trace, write and commit each shard.

    The output is each committed shard's ``ShardStats``. ``make_generator`` (called with no
    arguments on the worker, once per process) defaults to loading the run's model.
    """

    def __init__(
        self,
        settings: RunSettings,
        map_size: tuple[int, int],
        fingerprint: str,
        make_generator: Callable[[], ShardGenerator] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.map_size = map_size
        self.fingerprint = fingerprint
        self.make_generator = make_generator or functools.partial(build_generator, settings.to_dict())

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        features = functools.partial(run_features, self.settings.to_dict(), self.map_size)
        generate = GenerateShardFn(
            self.settings.output, self.settings.formats, features, self.fingerprint, self.make_generator, Shared()
        )
        return shards | "SpreadShards" >> beam.Reshuffle() | "GenerateAndTrace" >> beam.ParDo(generate)


def build_graph(
    pipeline: beam.Pipeline,
    pending: Sequence[ShardSpec],
    settings: RunSettings,
    map_size: tuple[int, int],
    fingerprint: str,
) -> beam.PCollection:
    """The run's whole graph on ``pipeline``: the pending shards, generated and committed."""
    return (
        pipeline
        | "ShardIds" >> beam.Create(list(pending))
        | "GenerateAndCommitShards" >> GenerateAndCommitShards(settings, map_size, fingerprint)
    )

"""The Beam graph on its own, with Beam's TestPipeline: shard descriptors in, committed shards out."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.driver import prepare, read_inputs
from pipeline.graph import GenerateAndCommitShards
from pipeline.options import RunSettings
from schemas.output_records import ShardStats
from transforms.attribution import GenerationConfig
from transforms.models.loading import ModelSpec

from tests.conftest import PROMPTS


@pytest.fixture
def plan(tmp_path, write_corpus):
    corpus = write_corpus(PROMPTS[:5])
    settings = RunSettings(
        prompts=str(corpus),
        output=str(tmp_path / "out"),
        model=ModelSpec("tiny", device="cpu"),
        generation=GenerationConfig(steps=2, height=64, width=64),
        shard_size=2,
        batch_size=2,
    )
    corpus, *inputs = read_inputs(settings)
    with corpus:
        return prepare(settings, corpus, *inputs)


def test_generate_and_commit_shards_commits_every_pending_shard(plan):
    layout = plan.layout
    with BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        stats = (
            pipeline
            | beam.Create(plan.pending)
            | GenerateAndCommitShards(plan.settings, plan.map_size, plan.info.fingerprint)
        )
        assert_that(
            stats | beam.Map(lambda s: (s.shard, s.rows, s.failed, sorted(s.files))),
            equal_to([(spec.name, spec.stop - spec.start, 0, ["parquet"]) for spec in plan.specs]),
        )
    assert [s.name for s in plan.pending] == [s.name for s in plan.specs]  # a new output: all three pending
    for spec in plan.specs:
        marker = ShardStats.from_dict(layout.read_json(layout.stats_file(spec.name)))
        assert marker.fingerprint == plan.info.fingerprint
        assert layout.exists(layout.data_file(spec.name, "parquet"))


def test_committed_shards_are_skipped_by_the_transform(plan):
    first = plan.specs[0]
    with BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        _ = pipeline | beam.Create([first]) | GenerateAndCommitShards(plan.settings, plan.map_size, plan.info.fingerprint)
    marker = plan.layout.read_text(plan.layout.stats_file(first.name))
    with BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        again = pipeline | beam.Create([first]) | GenerateAndCommitShards(plan.settings, plan.map_size, plan.info.fingerprint)
        assert_that(again, equal_to([]))  # the marker exists: nothing generated, nothing emitted
    assert plan.layout.read_text(plan.layout.stats_file(first.name)) == marker

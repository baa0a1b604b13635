"""The run-wide progress line counts prompts as they are generated: committed shards from their
stats markers, shards in flight from the progress file their worker rewrites after every batch."""

from __future__ import annotations

import logging

from pipeline.progress import ProgressReporter
from schemas.output_records import ShardStats
from schemas.record import SCHEMA_VERSION
from transforms.shards.dofn import GenerateShardFn
from transforms.shards.layout import OutputLayout


def _stats(shard: str, prompts: int) -> dict:
    return ShardStats(shard=shard, index=0, count=2, prompts=prompts, rows=prompts, failed=0, ids=[], failed_ids=[],
                      files={}, seconds=1.0, schema_version=SCHEMA_VERSION).to_dict()


def test_batches_in_flight_are_counted_before_their_shard_commits(tmp_path):
    layout = OutputLayout(str(tmp_path))
    fn = GenerateShardFn(str(tmp_path), ("parquet",), lambda: None, "fp", lambda: None, None)
    fn._layout, fn._shard, fn._shard_total, fn._done_in_shard, fn._last_log = layout, "train-00001-of-00002", 1000, 0, 0.0
    fn._on_batch(8, 0.5)
    fn._on_batch(8, 0.5)
    assert layout.read_json(layout.progress_file("train-00001-of-00002")) == {"prompts": 16}
    reporter = ProgressReporter(layout, total_prompts=2000, lock=None)
    assert reporter.done_at_start == 16
    # a committed shard counts once, by its marker, even if its progress file is still there
    layout.write_json_atomic(layout.stats_file("train-00000-of-00002"), _stats("train-00000-of-00002", 1000))
    layout.write_json_atomic(layout.progress_file("train-00000-of-00002"), {"prompts": 992})
    layout.write_bytes_atomic(layout.progress_file("train-00009-of-00010"), b"{half")  # being replaced: skipped
    assert reporter._done() == 1000 + 16


def test_progress_line_moves_within_a_shard(tmp_path, caplog):
    layout = OutputLayout(str(tmp_path))

    class Lock:
        def heartbeat(self) -> None:
            pass

    reporter = ProgressReporter(layout, total_prompts=1000, lock=Lock(), interval=0.05)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"), reporter:
        layout.write_json_atomic(layout.progress_file("train-00000-of-00001"), {"prompts": 40})
        reporter.stop_event.wait(0.3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert any(line.startswith("progress: 40/1000 prompts") and "ETA ?" not in line for line in lines), lines

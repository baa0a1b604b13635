"""Records are encoded on a background thread while the next batch is generated: bounded queue,
the synchronous loop's records and bytes, its failure records and its exceptions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest

import transforms.shards.generator as shard_generator
from schemas.record import build_features
from transforms.attribution import GenerationConfig
from transforms.corpus import PromptRecord
from transforms.shards.layout import OutputLayout
from transforms.shards.results import PromptFailure
from transforms.shards.generator import ShardGenerator
from transforms.shards.sharding import ShardSpec
from transforms.shards.sinks import commit_shard

PROMPTS = [PromptRecord(i, f"p{i}", prompt, seed=i) for i, prompt in enumerate(["a cat", "a dog", "a red fox", "a cow"])]
SPEC = ShardSpec(0, 1, 0, len(PROMPTS))
CONFIG = GenerationConfig(steps=1, height=64, width=64)


@dataclass
class SlowEncoder(ShardGenerator):
    """Generation returns the prompt ids at once; encoding sleeps; every event is logged."""

    encode_seconds: float = 0.05
    events: list[tuple[str, int, str]] = field(default_factory=list)
    unfinished: int = 0  # batches generated whose records are not yet collected
    most_unfinished: int = 0

    def _generate(self, prompts: Sequence[PromptRecord]) -> list[Any]:
        self.most_unfinished = max(self.most_unfinished, self.unfinished)
        self.unfinished += 1
        self.events.append(("generate", int(prompts[0].id[1:]), threading.current_thread().name))
        return [p.id for p in prompts]

    def _encode(self, prompts: Sequence[PromptRecord], samples: Sequence[Any]) -> list[Any]:
        time.sleep(self.encode_seconds)
        self.events.append(("encoded", int(prompts[0].id[1:]), threading.current_thread().name))
        return list(samples)

    def _finish(self, batch: Any, result: Any, on_batch: Any) -> None:
        super()._finish(batch, result, on_batch)
        self.unfinished -= 1


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_queue_is_bounded_and_records_keep_their_order(depth):
    generator = SlowEncoder(pipe=None, config=CONFIG, encode_queue=depth)
    result = generator.run_shard(SPEC, PROMPTS)
    assert result.records == [p.id for p in PROMPTS]
    assert generator.most_unfinished == depth  # at most `depth` batches wait while one is generated
    main = threading.current_thread().name
    assert {t for kind, _, t in generator.events if kind == "generate"} == {main}
    assert {t for kind, _, t in generator.events if kind == "encoded"} != {main}


def test_the_next_batch_is_generated_while_the_encoder_works():
    generator = SlowEncoder(pipe=None, config=CONFIG, encode_queue=2, encode_seconds=0.2)
    generator.run_shard(SPEC, PROMPTS)
    order = [(kind, index) for kind, index, _ in generator.events]
    assert order.index(("generate", 1)) < order.index(("encoded", 0))
    assert order.index(("generate", 2)) < order.index(("encoded", 0))


def test_an_unexpected_encoder_error_is_raised_by_run_shard():
    class Broken(SlowEncoder):
        def _encode(self, prompts: Sequence[PromptRecord], samples: Sequence[Any]) -> list[Any]:
            raise TypeError(f"bug while encoding {prompts[0].id}")

    with pytest.raises(TypeError, match="bug while encoding p0"):
        Broken(pipe=None, config=CONFIG).run_shard(SPEC, PROMPTS)


def test_negative_queue_is_refused():
    with pytest.raises(ValueError, match="encode_queue must be >= 0"):
        ShardGenerator(pipe=None, config=CONFIG, encode_queue=-1)


def _shard_bytes(pipe: Any, depth: int, folder: Path) -> tuple[Any, dict[str, bytes]]:
    generator = ShardGenerator(pipe, CONFIG, batch_size=1, overlay=True, encode_queue=depth)
    result = generator.run_shard(SPEC, PROMPTS)
    layout = OutputLayout(str(folder))
    commit_shard(layout, result, ("parquet", "webdataset"), build_features(8, 8, overlay=True), "fp")
    files = {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and "_stats" not in p.parts}
    return result, files


def test_background_shards_are_byte_identical_to_synchronous_ones(tiny_pipe, tmp_path, one_torch_thread):
    background, background_files = _shard_bytes(tiny_pipe, 2, tmp_path / "background")
    synchronous, synchronous_files = _shard_bytes(tiny_pipe, 0, tmp_path / "synchronous")
    assert [r.id for r in background.records] == [p.id for p in PROMPTS]
    assert {n for n in background_files if n.endswith((".parquet", ".tar"))} == {"train-00000-of-00001.parquet", "train-00000-of-00001.tar"}
    assert background_files == synchronous_files


def test_a_bad_row_still_becomes_a_failure_record(tiny_pipe, monkeypatch, one_torch_thread):
    real = shard_generator.to_record
    encoder_threads = set()

    def to_record(prompt: PromptRecord, *args: Any, **kwargs: Any) -> Any:
        encoder_threads.add(threading.current_thread().name)
        if prompt.id == "p1":
            raise PromptFailure("attribution", "token maps contain NaN or infinite values")
        return real(prompt, *args, **kwargs)

    monkeypatch.setattr(shard_generator, "to_record", to_record)
    result = ShardGenerator(tiny_pipe, CONFIG, batch_size=2).run_shard(SPEC, PROMPTS)
    assert [r.id for r in result.records] == ["p0", "p2", "p3"]
    [failure] = result.failures
    assert (failure.id, failure.stage) == ("p1", "attribution")
    assert threading.current_thread().name in encoder_threads  # the retry encodes on this thread
    assert len(encoder_threads) == 2  # the batches themselves on the encoder's

"""Records encoded on the background thread (``ShardGenerator.encode_queue`` 2, the default) vs
encoded before the next batch is generated (``encode_queue`` 0, the synchronous loop): seconds per
shard, the denoiser's busy share and the memory the queue holds.

    python -m benchmarks.encoder_overlap [--model tiny|sd15|sd21|sdxl|PATH] [--prompts 8]
        [--size 256] [--steps 2] [--batch-size 2] [--repeats 3] [--device auto]

One shard of ``--prompts`` prompts goes through ``ShardGenerator.run_shard`` (generation, PNG,
maps, overlay; the run's defaults), the two queue depths alternating (``common.paired_times``).
During each, the denoiser's ``forward`` and ``shard_generator.to_record`` are timed
(``common.CallTimer``): busy share = denoiser seconds over the shard's wall seconds. The queue's
memory bound is ``encode_queue`` batches of samples (image float32 + maps), computed from one
batch. ``ratio``: background over synchronous seconds per shard. Writes
benchmarks/results/encoder_overlap.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import transforms.shard_generator as shard_generator
from benchmarks import shapes
from benchmarks.beam_throughput import WORDS, denoiser_class
from benchmarks.common import CallTimer, paired_times, resolve_device, result_record, write_result
from transforms.attribution import GenerationConfig
from transforms.corpus import PromptRecord
from transforms.model_loading import ModelSpec, load_pipeline
from transforms.shard_generator import ShardGenerator
from transforms.sharding import ShardSpec

DEPTHS = {"background": shard_generator.ENCODE_QUEUE_BATCHES, "synchronous": 0}


def batch_bytes(generator: ShardGenerator, prompts: list[PromptRecord]) -> int:
    """Bytes one generated batch holds until it is encoded: images and maps of its samples."""
    samples = generator._generate(prompts[: generator.batch_size])
    return sum(s.image.nbytes + s.heat_map.maps.nelement() * s.heat_map.maps.element_size() for s in samples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    shape = args.model if args.model in shapes.SHAPES else None
    model = str(shapes.saved(shape)) if shape else args.model
    pipe = load_pipeline(ModelSpec(model, device=device))
    config = GenerationConfig(steps=args.steps, height=args.size, width=args.size)
    prompts = [PromptRecord(i, f"p{i}", f"a photo of a {WORDS[i % len(WORDS)]} number {i}", i) for i in range(args.prompts)]
    spec = ShardSpec(0, 1, 0, len(prompts))
    generators = {name: ShardGenerator(pipe, config, args.batch_size, overlay=True, encode_queue=depth)
                  for name, depth in DEPTHS.items()}
    busy: dict[str, list[dict[str, float]]] = {name: [] for name in DEPTHS}

    def shard(name: str) -> Any:
        def run() -> None:
            denoiser = CallTimer(denoiser_class(model), "forward", device)
            encode = CallTimer(shard_generator, "to_record", device)
            start = time.perf_counter()
            with denoiser, encode:
                generators[name].run_shard(spec, prompts)
            wall = time.perf_counter() - start
            busy[name].append({"wall": wall, "denoiser": denoiser.seconds, "encode": encode.seconds})
        return run

    timing = paired_times(shard("background"), shard("synchronous"), args.repeats)
    share = {name: statistics.median(r["denoiser"] / r["wall"] for r in runs[1:]) for name, runs in busy.items()}
    queued = batch_bytes(generators["background"], prompts) * DEPTHS["background"]
    result = result_record(
        "encoder_overlap", timing["ratio_median"], device,
        ratio_is="seconds per shard, records encoded on the background thread over encoded synchronously",
        settings={**vars(args), "shape": shape, "depths": DEPTHS}, timing=timing, denoiser_busy=share,
        runs=busy, queue_bytes=queued,
    )
    path = write_result("encoder_overlap", result)
    encode = statistics.median(r["encode"] for r in busy["synchronous"][1:]) / args.prompts
    print(f"background {timing['a_median']:.2f} s vs synchronous {timing['b_median']:.2f} s per shard "
          f"(ratio {timing['ratio_median']:.3f}); denoiser busy {100 * share['background']:.1f} % vs "
          f"{100 * share['synchronous']:.1f} %; encode {1000 * encode:.1f} ms per row; the queue holds at most "
          f"{queued / 2**20:.1f} MiB; results: {path}")
    return result


if __name__ == "__main__":
    main()

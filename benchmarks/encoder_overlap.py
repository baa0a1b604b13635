"""Records encoded on the background thread (``ShardGenerator.encode_queue`` 2, the default) vs
encoded before the next batch is generated (``encode_queue`` 0, the synchronous loop): seconds per
shard, the denoiser's busy share and the memory the queue holds.

    python -m benchmarks.encoder_overlap [--model tiny|sd15|sd21|sdxl|PATH] [--prompts 8]
        [--size 256] [--steps 2] [--batch-size 2] [--repeats 3] [--threads 1] [--device auto]

One shard of ``--prompts`` prompts goes through ``ShardGenerator.run_shard`` (generation, PNG,
maps, overlay; the run's defaults), the two queue depths alternating (``common.paired_times``).
During each, the denoiser's ``forward``, ``shard_generator.to_record`` and
``ShardGenerator._finish`` are timed (``common.CallTimer``): busy share = denoiser seconds over
the shard's wall seconds; ``blocked`` = seconds the generating thread spent collecting records
(encoding them itself, synchronously, or waiting for the encoder thread): what the denoiser
waits for the encoder, a figure other processes on a shared machine disturb little. The queue's
memory bound is ``encode_queue`` batches of samples (image float32 + maps), computed from one
batch. ``ratio``: seconds the generating thread is blocked per row, background over synchronous
(wall seconds per shard are reported beside it: on a CPU without a spare core the encoder thread
takes its time from the denoiser, so only an idle core, e.g. next to a GPU, turns the hidden
encoding into throughput). Writes
benchmarks/results/encoder_overlap.json.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import transforms.shards.generator as shard_generator
from benchmarks.beam_throughput import WORDS, denoiser_class
from benchmarks.common import CallTimer, paired_times, result_record, write_result
from benchmarks.run_args import generation_parser, load
from transforms.attribution import GenerationConfig
from transforms.corpus import PromptRecord
from transforms.shards.generator import ShardGenerator
from transforms.shards.sharding import ShardSpec

DEPTHS = {"background": shard_generator.ENCODE_QUEUE_BATCHES, "synchronous": 0}


def batch_bytes(generator: ShardGenerator, prompts: list[PromptRecord]) -> int:
    """Bytes one generated batch holds until it is encoded: images and maps of its samples."""
    samples = generator._generate(prompts[: generator.batch_size])
    return sum(s.image.nbytes + s.heat_map.maps.nelement() * s.heat_map.maps.element_size() for s in samples)


def main(argv: list[str] | None = None) -> dict:
    parser = generation_parser(__doc__, model="tiny", size=256, steps=2, batch_size=2)
    parser.add_argument("--prompts", type=int, default=8)
    args = parser.parse_args(argv)
    loaded = load(args)
    pipe, device, model = loaded.pipe, loaded.device, loaded.model
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
            collect = CallTimer(ShardGenerator, "_finish", device)
            start = time.perf_counter()
            with denoiser, encode, collect:
                generators[name].run_shard(spec, prompts)
            wall = time.perf_counter() - start
            busy[name].append({"wall": wall, "denoiser": denoiser.seconds, "encode": encode.seconds,
                               "blocked": collect.seconds})
        return run

    timing = paired_times(shard("background"), shard("synchronous"), args.repeats)
    share = {name: statistics.median(r["denoiser"] / r["wall"] for r in runs[1:]) for name, runs in busy.items()}
    blocked = {name: statistics.median(r["blocked"] for r in runs[1:]) / args.prompts for name, runs in busy.items()}
    queued = batch_bytes(generators["background"], prompts) * DEPTHS["background"]
    result = result_record(
        "encoder_overlap", blocked["background"] / blocked["synchronous"], device,
        ratio_is="seconds per row the generating thread waits for records, background encoder over synchronous",
        settings={**vars(args), "shape": loaded.shape, "depths": DEPTHS}, timing=timing, denoiser_busy=share,
        blocked_seconds_per_row=blocked, runs=busy, queue_bytes=queued,
    )
    path = write_result("encoder_overlap", result)
    encode = statistics.median(r["encode"] for r in busy["synchronous"][1:]) / args.prompts
    print(f"background {timing['a_median']:.2f} s vs synchronous {timing['b_median']:.2f} s per shard "
          f"(ratio {timing['ratio_median']:.3f}); denoiser busy {100 * share['background']:.1f} % vs "
          f"{100 * share['synchronous']:.1f} %; encode {1000 * encode:.1f} ms per row; the generating thread "
          f"blocked {1000 * blocked['background']:.1f} vs {1000 * blocked['synchronous']:.1f} ms per row; the queue "
          f"holds at most "
          f"{queued / 2**20:.1f} MiB; results: {path}")
    return result


if __name__ == "__main__":
    main()

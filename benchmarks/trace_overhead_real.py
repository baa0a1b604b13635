"""Trace overhead on real model shapes: traced / untraced seconds per image, per shape and batch.

    python -m benchmarks.trace_overhead_real [--shapes sd15,sd21,sdxl] [--batches 1,4,8]
        [--shape-batches sdxl=1,4] [--size 128] [--steps 2] [--repeats 1] [--warmup 1] [--device auto]
        [--dtype float32] [--located-repeats 0] [--tiny]

Each shape is its published denoiser at full size with random weights (``benchmarks.shapes``:
SD-1.5, SD-2.1-base, SDXL; one-layer text-encoder stand-ins, the tiny VAE). For every batch
size (``--shape-batches SHAPE=B,B`` overrides ``--batches`` for one shape; the defaults are the
committed CPU run's: SDXL at batch 1 and 4 only), ``generate_traced`` (this project's tracer, default layers) and the same pipeline call
without the tracer (``common.untraced_generate``) alternate on the same prompts and seeds
(``common.paired_times``), after ``--warmup`` rounds per shape at the smallest batch (the first
call on a fresh model pays for page faults and kernel selection) and, with a warm-up, one 1-step
untraced call at each batch size. ``ratio`` is the worst median
traced/untraced ratio over every shape and batch (goal on CPU <= 1.03x, on GPU <= 1.05x at batch
8). ``--located-repeats N`` also times N pairs in parts (``benchmarks.located_overhead``: the
traced modules and what runs outside the denoiser, where a traced call differs from an untraced
one) and reports ``located_ratio`` per batch, resolvable where whole calls drift (a shared CPU).
``--tiny`` shrinks every width (a smoke check, not a measurement). Writes
benchmarks/results/trace_overhead_real.json (``--name``: another name).
"""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

import torch

from benchmarks import shapes
from benchmarks.common import (
    paired_times,
    resolve_device,
    result_record,
    synchronize,
    untraced_generate,
    write_result,
)
from benchmarks.located_overhead import describe, located_overhead
from benchmarks.trace_overhead import PROMPTS
from transforms.attribution import GenerationConfig, generate_traced

logger = logging.getLogger(__name__)
GOALS = {"cpu": 1.03, "gpu_batch_8": 1.05}


def int_list(value: str) -> list[int]:
    """``"1,4,8"`` → ``[1, 4, 8]``."""
    return [int(v) for v in value.split(",") if v.strip()]


def batch_prompts(batch: int) -> tuple[list[str], list[int]]:
    """``batch`` benchmark prompts (cycled) and their seeds."""
    prompts = (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]
    return prompts, list(range(batch))


def measure_shape(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every batch size of one shape: seconds per image traced and untraced, their ratio."""
    pipe = shapes.build(name, args.device, args.tiny)
    if args.dtype != "float32":
        pipe = pipe.to(getattr(torch, args.dtype))
    config = GenerationConfig(steps=args.steps, height=args.size, width=args.size)

    def pair(batch: int) -> tuple[Any, Any]:
        prompts, seeds = batch_prompts(batch)

        def traced() -> None:
            generate_traced(pipe, prompts, seeds, config)
            synchronize(args.device)

        def untraced() -> None:
            untraced_generate(pipe, prompts, seeds, config)
            synchronize(args.device)

        return traced, untraced

    sizes = args.shape_batches.get(name, args.batches)
    traced, untraced = pair(min(sizes))
    for _ in range(args.warmup):
        traced()
        untraced()
    batches = {}
    for batch in sizes:
        if args.warmup:  # a new batch shape's first call pays for its allocations: not the traced side's cost
            prompts, seeds = batch_prompts(batch)
            untraced_generate(pipe, prompts, seeds, GenerationConfig(steps=1, height=args.size, width=args.size))
        timing = paired_times(*pair(batch), repeats=args.repeats, warmup=0)
        batches[str(batch)] = record = {
            "traced_seconds_per_image": timing["a_median"] / batch,
            "untraced_seconds_per_image": timing["b_median"] / batch,
            "ratio": timing["ratio_median"],
            "timing": timing,
        }
        print(f"{name} batch {batch}: traced/untraced = {timing['ratio_median']:.3f}x "
              f"(min {timing['ratio_min']:.3f}, max {timing['ratio_max']:.3f}); "
              f"{timing['a_median'] / batch:.2f} vs {timing['b_median'] / batch:.2f} s per image", flush=True)
        if args.located_repeats:
            record["located"] = located = located_overhead(pipe, *batch_prompts(batch), config, args.located_repeats, args.device)
            print(f"{name} batch {batch}: {describe(located)}", flush=True)
    return {"source": shapes.SHAPES[name].source, "denoiser_parameters": shapes.parameters(pipe), "batches": batches}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="sd15,sd21,sdxl", help=f"comma list of {', '.join(shapes.SHAPES)}")
    parser.add_argument("--batches", type=int_list, default=[1, 4, 8])
    parser.add_argument("--shape-batches", nargs="*", default=["sdxl=1,4"], metavar="SHAPE=B,B",
                        help="batch sizes of one shape instead of --batches (none: every shape at --batches)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--located-repeats", type=int, default=0, help="pairs timed in parts per batch (0: none)")
    parser.add_argument("--tiny", action="store_true", help="shrink every width (a smoke check, not a measurement)")
    parser.add_argument("--name", default="trace_overhead_real", help="result name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    args.shape_batches = {k: int_list(v) for k, _, v in (item.partition("=") for item in args.shape_batches)}
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    unknown = [n for n in [*names, *args.shape_batches] if n not in shapes.SHAPES]
    if unknown or not names:
        parser.error(f"--shapes: choose from {', '.join(shapes.SHAPES)}, got {args.shapes!r}")

    by_shape = {}
    for name in names:
        by_shape[name] = measure_shape(name, args)
        gc.collect()  # the previous shape's pipeline, before the next is built
    ratios = {f"{n}/b{b}": r["ratio"] for n, s in by_shape.items() for b, r in s["batches"].items()}
    located = {f"{n}/b{b}": r["located"]["located_ratio"] for n, s in by_shape.items()
               for b, r in s["batches"].items() if "located" in r}
    worst = max(ratios, key=ratios.get)
    result = result_record(
        args.name, ratios[worst], args.device,
        ratio_is=f"worst median traced/untraced seconds per image over shapes and batches ({worst})",
        what="traced / untraced seconds per image, real denoiser shapes (random weights), same prompts, seeds, batch",
        settings={**vars(args), "shapes": names},
        goals=GOALS,
        ratios=ratios,
        located_ratios=located,
        shapes=by_shape,
    )
    path = write_result(args.name, result)
    print(f"worst traced/untraced = {ratios[worst]:.3f}x ({worst}; goal <= {GOALS['cpu']} on CPU) at {args.size}px, "
          f"{args.steps} steps, {args.device} {args.dtype}; results: {path}")
    return result


if __name__ == "__main__":
    main()

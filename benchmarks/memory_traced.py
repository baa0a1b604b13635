"""Peak memory of traced generation: vs untraced, and vs the number of steps (must stay flat).

    python -m benchmarks.memory_traced [--shape sd15] [--size 256] [--steps 2,4,8] [--batch 1]
        [--device auto] [--dtype float32] [--tiny]

Each variant runs once in a fresh subprocess on the same real-shaped pipeline (``benchmarks.shapes``,
random weights): ``traced`` at every step count, ``untraced`` (``common.untraced_generate``) at
the fewest and the most steps. Each reports its peak (``common.peak_memory``: CUDA
``max_memory_allocated``; CPU peak RSS, reset to the loaded pipeline's RSS before generating) and
the growth over the loaded pipeline. ``ratio`` is the worst traced/untraced peak at equal steps
(goal <= 1.1x); ``steps_peak_ratio`` the traced peak at the most steps over the fewest (flat:
1.0). Writes benchmarks/results/memory_traced.json.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks import shapes
from benchmarks.common import json_subprocess, peak_memory, resolve_device, result_record, untraced_generate, write_result
from benchmarks.trace_overhead_real import batch_prompts, int_list
from transforms.attribution import GenerationConfig, generate_traced

GOALS = {"traced_over_untraced_peak": 1.1, "steps_peak_ratio": 1.0}
MIB = 2**20


def variants(steps: list[int]) -> list[tuple[str, int]]:
    """(variant, steps): traced at every count, untraced at the fewest and the most."""
    ends = sorted({min(steps), max(steps)})
    return [("untraced", ends[0]), *(("traced", s) for s in steps), *(("untraced", s) for s in ends[1:])]


def measure(variant: str, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one generation of ``variant`` in this (fresh) process."""
    pipe = shapes.build(args.shape, args.device, args.tiny)
    if args.dtype != "float32":
        pipe = pipe.to(getattr(torch, args.dtype))
    prompts, seeds = batch_prompts(args.batch)
    config = GenerationConfig(steps=steps, height=args.size, width=args.size)
    generate = generate_traced if variant == "traced" else untraced_generate
    return {"variant": variant, "steps": steps, **peak_memory(lambda: generate(pipe, prompts, seeds, config), args.device)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="sd15", choices=sorted(shapes.SHAPES))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int_list, default=[2, 4, 8])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--tiny", action="store_true", help="shrink every width (a smoke check, not a measurement)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # VARIANT:STEPS, in the subprocess
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    if args.memory_of:
        variant, steps = args.memory_of.split(":")
        print(json.dumps(measure(variant, int(steps), args)))
        return {}

    passed = [f"--shape={args.shape}", f"--size={args.size}", f"--batch={args.batch}", f"--device={args.device}",
              f"--dtype={args.dtype}", *(["--tiny"] if args.tiny else [])]
    runs = [json_subprocess("benchmarks.memory_traced", [*passed, f"--memory-of={v}:{s}"]) for v, s in variants(args.steps)]
    peak = {(r["variant"], r["steps"]): r["peak_bytes"] for r in runs}
    growth = {(r["variant"], r["steps"]): r["growth_bytes"] for r in runs}
    ends = sorted({min(args.steps), max(args.steps)})
    traced_over_untraced = {s: peak[("traced", s)] / peak[("untraced", s)] for s in ends}
    growth_over_untraced = {s: growth[("traced", s)] / max(growth[("untraced", s)], 1) for s in ends}
    worst = max(traced_over_untraced, key=traced_over_untraced.get)
    fewest, most = ends[0], ends[-1]
    result = result_record(
        "memory_traced", traced_over_untraced[worst], args.device,
        ratio_is=f"traced / untraced peak memory at {worst} steps (the worse of {fewest} and {most} steps)",
        what="peak memory of one generation, each variant in a fresh process, real denoiser shape (random weights)",
        settings={k: v for k, v in vars(args).items() if k != "memory_of"},
        goals=GOALS,
        traced_over_untraced_peak={str(s): r for s, r in traced_over_untraced.items()},
        traced_over_untraced_growth={str(s): r for s, r in growth_over_untraced.items()},
        steps_peak_ratio=peak[("traced", most)] / peak[("traced", fewest)],
        steps_growth_bytes=growth[("traced", most)] - growth[("traced", fewest)],
        traced_peak_by_steps={str(s): peak[("traced", s)] for s in args.steps},
        runs=runs,
    )
    path = write_result("memory_traced", result)
    kind = runs[0]["kind"]
    for s in ends:
        print(f"{args.shape}, {s} steps: traced/untraced peak = {traced_over_untraced[s]:.3f}x (goal <= 1.1; "
              f"{peak[('traced', s)] / MIB:.0f} vs {peak[('untraced', s)] / MIB:.0f} MiB {kind}), growth over the "
              f"loaded pipeline {growth[('traced', s)] / MIB:.0f} vs {growth[('untraced', s)] / MIB:.0f} MiB")
    print("traced peak by steps: " + ", ".join(f"{s}: {peak[('traced', s)] / MIB:.0f} MiB" for s in args.steps)
          + f" ({result['steps_peak_ratio']:.3f}x from {fewest} to {most} steps); results: {path}")
    return result


if __name__ == "__main__":
    main()

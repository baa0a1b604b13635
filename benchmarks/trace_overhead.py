"""Traced vs untraced generation on the same prompts, seeds and batch, measured side by side.

    python -m benchmarks.trace_overhead [--batch-size 4] [--size 256] [--steps 10] [--repeats 5]

Prints the median time ratio traced/untraced (goal <= 1.10 at batch 4 on CPU) and writes
benchmarks/results/trace_overhead.json with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import machine_info, paired_times, write_result
from transforms.attribution import GenerationConfig, generate_traced
from transforms.models.loading import ModelSpec, load_pipeline

PROMPTS = [
    "a photo of a cat sitting on a red sofa",
    "a dog and a dog playing with a ball in the park",
    "an armadillo eating a slice of watermelon",
    "a lighthouse on a rocky cliff at sunset",
    "a red bicycle leaning against a brick wall",
    "two horses running across a snowy field",
    "a cup of coffee next to an open book",
    "a sailboat on a calm blue lake",
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    pipe = load_pipeline(ModelSpec(args.model, device=args.device))
    prompts = (PROMPTS * ((args.batch_size // len(PROMPTS)) + 1))[: args.batch_size]
    seeds = list(range(len(prompts)))
    config = GenerationConfig(steps=args.steps, height=args.size, width=args.size)

    def untraced() -> None:
        pipe(prompts, height=args.size, width=args.size, num_inference_steps=args.steps,
             generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="np")

    def traced() -> None:
        generate_traced(pipe, prompts, seeds, config)

    timing = paired_times(traced, untraced, args.repeats)
    result = {
        "benchmark": "trace_overhead",
        "what": "traced / untraced seconds per batched generation (same prompts, seeds, batch)",
        "settings": vars(args),
        "ratio_traced_over_untraced": timing["ratio_median"],
        "timing": timing,
        "machine": machine_info(),
    }
    path = write_result(f"trace_overhead_b{args.batch_size}_{args.size}px", result)
    print(f"traced/untraced = {timing['ratio_median']:.3f}x (min {timing['ratio_min']:.3f}, max {timing['ratio_max']:.3f}); "
          f"traced {timing['a_median']:.2f}s, untraced {timing['b_median']:.2f}s per batch of {args.batch_size} "
          f"at {args.size}px, {args.steps} steps")
    print(f"machine: {json.dumps(result['machine']['processor'])}, {result['machine']['cpu_count']} cpus, "
          f"cuda={result['machine']['cuda']}; results: {path}")
    return result


if __name__ == "__main__":
    main()

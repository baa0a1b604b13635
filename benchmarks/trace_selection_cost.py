"""Seconds per traced call with a narrower trace selection (``--step-range``, ``--layers``) over
tracing every step of the default layers, and over the untraced call: what skipping saves.

    python -m benchmarks.trace_selection_cost [--model sd15|sd21|sdxl|tiny|PATH] [--size 128]
        [--steps 4] [--batch-size 1] [--repeats 3] [--device auto]

Unselected steps and modules run their original fused processor, so a selection costs the
untraced call plus the traced calls it keeps. Each variant is timed against tracing everything
(``common.paired_times``); ``ratio`` is ``--step-range 0:1`` over every step. Writes
benchmarks/results/trace_selection_cost.json.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from benchmarks import shapes
from benchmarks.common import paired_times, resolve_device, result_record, untraced_generate, write_result
from transforms.attribution import GenerationConfig, generate_traced
from transforms.attribution.config import TraceConfig
from transforms.model_loading import ModelSpec, load_pipeline

PROMPT = "a photo of a red cat on a blue sofa"
VARIANTS = {"steps_0_1": TraceConfig(step_range=(0, 1)), "layers_down": TraceConfig(layers="down")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    shape = args.model if args.model in shapes.SHAPES else None
    pipe = load_pipeline(ModelSpec(str(shapes.saved(shape)) if shape else args.model, device=device))
    prompts, seeds = [PROMPT] * args.batch_size, list(range(args.batch_size))
    everything = GenerationConfig(steps=args.steps, height=args.size, width=args.size)

    def traced(config: GenerationConfig) -> Callable[[], Any]:
        return lambda: generate_traced(pipe, prompts, seeds, config)

    timings = {name: paired_times(traced(dataclasses.replace(everything, trace=trace)), traced(everything), args.repeats)
               for name, trace in VARIANTS.items()}
    timings["untraced"] = paired_times(lambda: untraced_generate(pipe, prompts, seeds, everything), traced(everything),
                                       args.repeats)
    result = result_record(
        "trace_selection_cost", timings["steps_0_1"]["ratio_median"], device,
        ratio_is=f"seconds per call, --step-range 0:1 over tracing all {args.steps} steps",
        settings={**vars(args), "shape": shape}, timings=timings,
    )
    path = write_result("trace_selection_cost", result)
    for name, timing in timings.items():
        print(f"{name}: {timing['a_median']:.3f} s vs {timing['b_median']:.3f} s tracing everything "
              f"(ratio {timing['ratio_median']:.3f})")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

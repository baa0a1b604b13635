"""Seconds per traced call with a narrower trace selection (``--step-range``, ``--layers``) over
tracing every step of the default layers, and over the untraced call: what skipping saves.

    python -m benchmarks.trace_selection_cost [--model sd15|sd21|sdxl|tiny|PATH] [--size 128]
        [--steps 4] [--batch-size 1] [--repeats 3] [--threads 1] [--device auto]

Unselected steps and modules run their original fused processor, so a selection costs the
untraced call plus the traced calls it keeps. Each variant is timed against tracing everything
(``cpu_time.paired_cpu_times``: wall and CPU seconds); ``ratio`` is ``--step-range 0:1`` over
every step (CPU seconds on CPU, ``cpu_time.headline``). Writes
benchmarks/results/trace_selection_cost_<model>.json (``model``: the shape, ``tiny``, or ``model``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from benchmarks.common import result_record, untraced_generate, write_result
from benchmarks.cpu_time import headline, paired_cpu_times
from benchmarks.run_args import generation_parser, load
from transforms.attribution import GenerationConfig, generate_traced
from transforms.attribution.config import TraceConfig

PROMPT = "a photo of a red cat on a blue sofa"
VARIANTS = {"steps_0_1": TraceConfig(step_range=(0, 1)), "layers_down": TraceConfig(layers="down")}


def main(argv: list[str] | None = None) -> dict:
    args = generation_parser(__doc__, model="sd15", size=128, steps=4).parse_args(argv)
    loaded = load(args)
    pipe, device = loaded.pipe, loaded.device
    prompts, seeds = [PROMPT] * args.batch_size, list(range(args.batch_size))
    everything = GenerationConfig(steps=args.steps, height=args.size, width=args.size)

    def traced(config: GenerationConfig) -> Callable[[], Any]:
        return lambda: generate_traced(pipe, prompts, seeds, config)

    timings = {name: paired_cpu_times(traced(dataclasses.replace(everything, trace=trace)), traced(everything),
                                      args.repeats) for name, trace in VARIANTS.items()}
    timings["untraced"] = paired_cpu_times(lambda: untraced_generate(pipe, prompts, seeds, everything),
                                           traced(everything), args.repeats)
    name = f"trace_selection_cost_{loaded.label}"
    result = result_record(
        name, headline(timings["steps_0_1"], device), device,
        ratio_is=f"seconds per call (CPU seconds on CPU), --step-range 0:1 over tracing all {args.steps} steps",
        settings={**vars(args), "shape": loaded.shape}, timings=timings,
    )
    path = write_result(name, result)
    for name, timing in timings.items():
        print(f"{name}: {timing['a_median']:.3f} s vs {timing['b_median']:.3f} s tracing everything "
              f"(wall ratio {timing['ratio_median']:.3f}; CPU {timing['a_cpu_median']:.3f} s vs "
              f"{timing['b_cpu_median']:.3f} s, ratio {timing['cpu_ratio_median']:.3f})")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

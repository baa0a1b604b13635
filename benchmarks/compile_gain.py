"""What ``--compile`` (``torch.compile`` of the denoiser, inductor, default mode) gains: compile
seconds, and steady-state seconds per call compiled over eager, traced and untraced, with the
traced maps compared.

    python -m benchmarks.compile_gain [--model tiny|sd15|sd21|sdxl|PATH] [--size 64] [--steps 2]
        [--batch-size 1] [--repeats 3] [--step-range 0:1] [--threads 1] [--device auto]

One pipeline, two denoisers: the loaded one (eager) and a deep copy compiled with
``model_loading.compile_denoiser``'s call, swapped in as ``pipe.unet``/``pipe.transformer``
between calls so each pair is timed back to back (``cpu_time.paired_cpu_times``: wall and CPU
seconds). Compile seconds: the first call of each kind minus its steady-state median (wall). ``--step-range`` also traces with a step
selection (which would recompile per step if the recording processors were traced into the graph).
``ratio``: compiled over eager seconds per traced call (CPU seconds on CPU, ``cpu_time.headline``). Writes benchmarks/results/compile_gain_<model>.json.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

from benchmarks.common import result_record, synchronize, untraced_generate, write_result
from benchmarks.cpu_time import headline, paired_cpu_times
from benchmarks.run_args import generation_parser, load
from transforms.attribution import GenerationConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.config import TraceConfig

PROMPT = "a photo of a red cat on a blue sofa"


def denoiser_attribute(pipe: Any) -> str:
    """``transformer`` or ``unet``: the pipeline attribute holding the denoiser."""
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def dynamo_graphs() -> dict[str, int]:
    """Graphs compiled so far, and graph breaks, in this process."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def timed_first(call: Callable[[], Any], device: str) -> float:
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = generation_parser(__doc__, model="tiny", size=64, steps=2)
    parser.add_argument("--step-range", default="0:1", help="START:STOP of a second traced variant ('' for none)")
    args = parser.parse_args(argv)
    loaded = load(args)
    pipe, device = loaded.pipe, loaded.device
    attribute = denoiser_attribute(pipe)
    eager = getattr(pipe, attribute)
    compiled = copy.deepcopy(eager)
    compiled.compile()  # what model_loading.compile_denoiser does to the loaded denoiser
    prompts, seeds = [PROMPT] * args.batch_size, list(range(args.batch_size))
    configs = {"traced": GenerationConfig(steps=args.steps, height=args.size, width=args.size)}
    if args.step_range:
        start, stop = (int(v) for v in args.step_range.split(":"))
        configs[f"traced_steps_{start}_{stop}"] = GenerationConfig(
            steps=args.steps, height=args.size, width=args.size, trace=TraceConfig(step_range=(start, stop)))

    def on(denoiser: Any, kind: str) -> Callable[[], Any]:
        def call() -> Any:
            setattr(pipe, attribute, denoiser)
            if kind == "untraced":
                return untraced_generate(pipe, prompts, seeds, configs["traced"])
            return generate_traced(pipe, prompts, seeds, configs[kind])
        return call

    kinds = ["untraced", *configs]
    first = {}
    for kind in kinds:
        first[kind] = {"seconds": timed_first(on(compiled, kind), device), **dynamo_graphs()}
    timings = {kind: paired_cpu_times(on(compiled, kind), on(eager, kind), args.repeats) for kind in kinds}
    after = dynamo_graphs()
    maps = {name: on(denoiser, "traced")()[0].heat_map.maps for name, denoiser in (("compiled", compiled), ("eager", eager))}
    difference = float((maps["compiled"] - maps["eager"]).abs().max())
    compile_seconds = {k: first[k]["seconds"] - timings[k]["a_median"] for k in kinds}
    result = result_record(
        f"compile_gain_{loaded.label}", headline(timings["traced"], device), device,
        ratio_is="seconds per traced call (CPU seconds on CPU), compiled denoiser over eager (steady state, paired)",
        settings={**vars(args), "shape": loaded.shape, "architecture": architecture_of(pipe).name},
        first_calls=first, compile_seconds=compile_seconds, timings=timings,
        graphs_after_timing=after, recompiled_while_timing=after["unique_graphs"] - first[kinds[-1]]["unique_graphs"],
        max_abs_map_difference=difference, max_map=float(maps["eager"].abs().max()),
    )
    path = write_result(result["name"], result)
    for kind in kinds:
        t = timings[kind]
        print(f"{kind}: compile {compile_seconds[kind]:.1f} s; steady {t['a_median']:.3f} s compiled vs "
              f"{t['b_median']:.3f} s eager (wall ratio {t['ratio_median']:.2f}; CPU {t['a_cpu_median']:.3f} s vs "
              f"{t['b_cpu_median']:.3f} s, ratio {t['cpu_ratio_median']:.2f})")
    print(f"graphs {after['unique_graphs']}, graph breaks {after['graph_breaks']}, recompiles while timing "
          f"{result['recompiled_while_timing']}; max |maps compiled - eager| {difference:.1e}; results: {path}")
    return result


if __name__ == "__main__":
    main()

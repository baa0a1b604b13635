"""Cost of ConceptAttention (``--concept-maps``): traced vs traced + concept maps, Flux and SD3.

    python -m benchmarks.concept_cost --arch flux|sd3|all [--size 256] [--steps 2] [--repeats 2]
        [--warmup 1] [--layers flux=4,2 sd3=6] [--concepts 4] [--device auto] [--dtype float32] [--tiny]

The denoisers are ``benchmarks.architecture_cost``'s: full width from the published configs
(FLUX.1-dev, SD3-medium), random weights, one-layer text encoders of the real widths and the real T5
windows (Flux 512, SD3 256 tokens); ``--layers`` reduces the depth (default here: Flux 4 double +
2 single blocks, SD3 6 joint blocks, what a 24 GiB CPU machine holds). Variants on the same prompt,
seed and batch: ``traced`` (``generate_traced``, every text-attention module) and ``concepts``
(the same with ``ConceptConfig()``: the official last four double-stream blocks, every step,
``--concepts`` concept words). Time: the two alternate in this process
(``cpu_time.paired_cpu_times``); memory: each runs once in a fresh subprocess (peak RSS / CUDA
peak). At reduced depth the concept work (four blocks' concept stream, the concept encoding) is
a larger share than in the full model, so the script also prints the ratio **projected to the
full depth**: the measured extra seconds over the traced time scaled by the parameter count of
the full transformer over the measured one (the denoiser dominates a call); peak memory is
projected the same way from the extra bytes. Goals: <= 1.15x time, <= 1.1x peak memory.
Writes ``benchmarks/results/concept_cost_<arch>.json`` with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import torch

from benchmarks import architecture_cost as arch_cost
from benchmarks.common import json_subprocess, peak_memory, resolve_device, result_record, synchronize, write_result
from benchmarks.cpu_time import paired_cpu_times
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.config import ConceptConfig

PROMPT = arch_cost.PROMPT
VARIANTS = ("traced", "concepts")
GOALS = {"time": 1.15, "memory": 1.1}
DEFAULT_LAYERS = {"flux": (4, 2), "sd3": (6,)}
CONCEPT_WORDS = ("cat", "sofa", "dog", "photo", "background", "floor", "wall", "window")


def generation_config(args: argparse.Namespace, variant: str) -> GenerationConfig:
    concepts = ConceptConfig(concepts=CONCEPT_WORDS[: args.concepts]) if variant == "concepts" else None
    return GenerationConfig(steps=args.steps, height=args.size, width=args.size, trace=TraceConfig(layers="all"),
                            concepts=concepts)


def run_variant(pipe: Any, variant: str, args: argparse.Namespace) -> None:
    generate_traced(pipe, [PROMPT] * args.images, list(range(args.images)), generation_config(args, variant))


def full_parameters(arch: str, pipe: Any) -> tuple[int, int]:
    """(parameters of the measured transformer, of the full-depth one): per-block counts taken
    from the measured blocks, so no full-size model is built."""
    denoiser = architecture_of(pipe).denoiser(pipe)
    measured = sum(p.numel() for p in denoiser.parameters())
    config = arch_cost.ARCHS[arch].config
    blocks = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    full = measured
    for attr, key in blocks.items():
        stack = getattr(denoiser, attr, None)
        if stack is None or not len(stack):
            continue
        per_block = sum(p.numel() for p in stack[0].parameters())
        full += per_block * (config[key] - len(stack))
    return measured, full


def measure_memory(arch: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    pipe = arch_cost.build_pipeline(arch, args)
    return {"variant": variant, **peak_memory(lambda: run_variant(pipe, variant, args), args.device)}


def passed_argv(args: argparse.Namespace) -> list[str]:
    argv = [f"--{k}={getattr(args, k)}" for k in ("device", "dtype", "images", "size", "steps", "concepts")]
    argv += ["--layers", *(f"{a}={','.join(map(str, d))}" for a, d in args.layers.items())]
    return argv + (["--tiny"] if args.tiny else [])


def benchmark(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [*passed_argv(args), "--arch", arch, "--memory-of"]
    memory = {v: json_subprocess("benchmarks.concept_cost", [*argv, v]) for v in VARIANTS}
    pipe = arch_cost.build_pipeline(arch, args)

    def timed(variant: str) -> Callable[[], None]:
        def run() -> None:
            run_variant(pipe, variant, args)
            synchronize(args.device)
        return run

    timing = paired_cpu_times(timed("concepts"), timed("traced"), args.repeats, args.warmup)
    measured, full = full_parameters(arch, pipe)
    scale = full / measured
    extra_seconds = timing["a_median"] - timing["b_median"]
    projected_time = 1 + extra_seconds / (timing["b_median"] * scale)
    peak = {v: memory[v]["peak_bytes"] for v in VARIANTS}
    # the weights grow with depth, the concept stream's extra bytes do not
    weights = 4 * full if args.dtype == "float32" else 2 * full
    projected_memory = 1 + (peak["concepts"] - peak["traced"]) / (peak["traced"] - 4 * measured + weights)
    result = result_record(
        f"concept_cost_{arch}", timing["ratio_median"], args.device,
        benchmark="concept_cost",
        what="traced + ConceptAttention / traced: seconds per generation and peak memory, full-width denoiser "
             "(random weights) at reduced depth, and both projected to the published depth",
        arch=arch,
        source=arch_cost.ARCHS[arch].source,
        settings={**{k: v for k, v in vars(args).items() if k not in ("memory_of", "arch", "layers")},
                  "layers": {a: list(d) for a, d in args.layers.items()}, "concepts": list(CONCEPT_WORDS[: args.concepts])},
        parameters={"measured": measured, "full_depth": full},
        ratio_cpu_time=timing["cpu_ratio_median"],
        ratio_peak_memory=peak["concepts"] / peak["traced"],
        projected_full_depth={"time": projected_time, "peak_memory": projected_memory},
        seconds_per_generation={"traced": timing["b_median"], "concepts": timing["a_median"]},
        goals=GOALS,
        timing=timing,
        memory=memory,
    )
    path = write_result(result["name"], result)
    where = f"{arch} ({measured / 1e9:.2f}B of {full / 1e9:.2f}B parameters), {args.size}px, {args.steps} steps, {args.device}"
    print(f"{where}: concepts/traced time = {timing['ratio_median']:.3f}x measured, {projected_time:.3f}x projected to "
          f"full depth (goal <= {GOALS['time']}); {timing['a_median']:.2f}s vs {timing['b_median']:.2f}s")
    print(f"{where}: concepts/traced peak memory = {result['ratio_peak_memory']:.3f}x measured, {projected_memory:.3f}x "
          f"projected (goal <= {GOALS['memory']}); results: {path}")
    return result


def parse_layers(items: list[str]) -> dict[str, tuple[int, ...]]:
    layers = {a: tuple(d) for a, d in DEFAULT_LAYERS.items()}
    for item in items:
        arch, _, depth = item.partition("=")
        layers[arch] = tuple(int(v) for v in depth.split(","))
    return layers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("flux", "sd3", "all"), required=True)
    arch_cost.add_run_arguments(parser)
    parser.add_argument("--concepts", type=int, default=4, choices=range(1, len(CONCEPT_WORDS) + 1))
    parser.add_argument("--layers", nargs="*", default=[], metavar="ARCH=N[,N]")
    parser.add_argument("--tiny", action="store_true", help="shrink every width (a smoke check, not a measurement)")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    args.layers = parse_layers(args.layers)
    if args.tiny:
        args.layers = {}
    arch_cost_args = argparse.Namespace(**{**vars(args), "layers": args.layers})
    if args.memory_of:
        print(json.dumps(measure_memory(args.arch, args.memory_of, arch_cost_args)))
        return
    torch.manual_seed(0)
    for arch in ("flux", "sd3") if args.arch == "all" else (args.arch,):
        benchmark(arch, arch_cost_args)


if __name__ == "__main__":
    main()

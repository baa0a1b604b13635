"""Cost of self-attention refinement (``--classes``): traced vs traced + refined generation.

    python -m benchmarks.refine_cost [--size 512] [--steps 3] [--repeats 2] [--warmup 1] [--device auto]
    python -m benchmarks.refine_cost --model colour-world-sa --images 24 --steps 20 --repeats 5

On the full-size Stable Diffusion 1.5 UNet architecture, built from its config with random weights
(``benchmarks.shapes``: only the UNet matters; the text encoder is a one-layer CLIP of hidden size
768, the VAE and tokenizer are the built-in tiny model's). Time: both variants alternate in this
process (``common.paired_times``). Memory: each variant runs once in a fresh subprocess, which
reports its peak (``common.peak_memory``: CUDA ``max_memory_allocated``; CPU peak RSS, ``VmHWM``)
and the peak growth over the loaded model. Prints the ratios (goals: <= 1.15x time, <= 1.1x
memory) and writes benchmarks/results/refine_cost.json with the machine and library versions.

``--model colour-world-sa``: the shipped self-attention world instead (its own 32 px, the
``colours`` classes, a held-out prompt; ``refine_cost_colour-world-sa.json``), where refinement
acts on trained affinities; there the baseline makes the same label maps without refinement, so the
ratio is refinement's own cost (at 32 px the label rule itself is a visible share of a generation).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks import shapes
from benchmarks.common import json_subprocess, machine_info, paired_times, peak_memory, write_result
from transforms.attribution import GenerationConfig, SegmentationConfig, generate_traced
from transforms.attribution.classes import load_vocabulary
from transforms.models.family import label_defaults

PROMPT = "a photo of a cat sitting on a red sofa next to a dog"
VARIANTS = ("traced", "refined")


WORLD_PROMPT = "a red circle and a blue square"


def run_variant(pipe: Any, variant: str, args: argparse.Namespace) -> None:
    """One traced generation, refined or not."""
    world = args.model != "sd15"
    size = None if world else args.size
    config = GenerationConfig(steps=args.steps, height=size, width=size, guidance_scale=1.0 if world else 7.5)
    vocabulary = load_vocabulary("colours" if world else "voc")
    if variant == "refined":  # the world: its own recipe (run --classes's defaults for it)
        recipe = {k: v for k, v in label_defaults(args.model).items() if k in ("refine_factor", "power")} if world else {}
        if args.refine_factor is not None:
            recipe["refine_factor"] = args.refine_factor
        segmentation = SegmentationConfig(vocabulary, **recipe)
    else:  # the world's baseline makes the same labels unrefined: 32 px images make labelling a visible share
        segmentation = SegmentationConfig(vocabulary, refine=False) if world else None
    prompt = WORLD_PROMPT if world else PROMPT
    generate_traced(pipe, [prompt] * args.images, list(range(args.images)), config, segmentation=segmentation)


def build(args: argparse.Namespace) -> Any:
    """The benchmark's pipeline: the SD-1.5 shape, or a shipped world."""
    if args.model == "sd15":
        return shapes.build("sd15", args.device)
    from transforms.colour_world.assets import shipped_model_path
    from transforms.colour_world.pipeline import load_world

    return load_world(shipped_model_path(args.model)).to(args.device)


def measure_memory(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one generation of ``variant`` in this (fresh) process."""
    pipe = build(args)
    return {"variant": variant, **peak_memory(lambda: run_variant(pipe, variant, args), args.device)}


def memory_in_subprocess(variant: str, argv: list[str]) -> dict[str, Any]:
    """``measure_memory`` of ``variant`` in a fresh interpreter (its peak is not shared)."""
    return json_subprocess("benchmarks.refine_cost", [*argv, "--memory-of", variant])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="sd15", choices=("sd15", "colour-world-sa"))
    parser.add_argument("--refine-factor", type=int, default=None, help="self-attention factor (default: the model's recipe; SD 2)")
    parser.add_argument("--name", default=None, help="result file name (default: refine_cost[_MODEL])")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args)))
        return {}

    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "memory_of" and v is not None]
    memory = {variant: memory_in_subprocess(variant, passed) for variant in VARIANTS}
    pipe = build(args)

    def sync() -> None:
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()

    timing = paired_times(lambda: (run_variant(pipe, "refined", args), sync()),
                          lambda: (run_variant(pipe, "traced", args), sync()), args.repeats, args.warmup)
    time_ratio = timing["ratio_median"]
    peak_ratio = memory["refined"]["peak_bytes"] / memory["traced"]["peak_bytes"]
    growth_ratio = memory["refined"]["growth_bytes"] / max(memory["traced"]["growth_bytes"], 1)
    result = {
        "benchmark": "refine_cost",
        "what": "traced + refined / traced: seconds per generation and peak memory, "
                + ("SD-1.5 UNet (random weights)" if args.model == "sd15" else f"the shipped {args.model}"),
        "settings": {k: v for k, v in vars(args).items() if k != "memory_of"},
        "seconds_per_image": {"refined": timing["a_median"] / args.images, "traced": timing["b_median"] / args.images},
        "ratio_time": time_ratio,
        "ratio_peak_memory": peak_ratio,
        "ratio_memory_growth": growth_ratio,
        "goals": {"time": 1.15, "memory": 1.1},
        "timing": timing,
        "memory": memory,
        "machine": machine_info(),
    }
    path = write_result(args.name or ("refine_cost" if args.model == "sd15" else f"refine_cost_{args.model}"), result)
    mib = 2**20
    print(f"refined/traced time = {time_ratio:.3f}x (goal <= 1.15); {result['seconds_per_image']['refined']:.2f}s vs "
          f"{result['seconds_per_image']['traced']:.2f}s per image at {'32' if args.model != 'sd15' else args.size}px, {args.steps} steps, {args.device}")
    print(f"refined/traced peak memory = {peak_ratio:.3f}x (goal <= 1.1; {memory['refined']['peak_bytes'] / mib:.0f} vs "
          f"{memory['traced']['peak_bytes'] / mib:.0f} MiB {memory['traced']['kind']}); growth over the loaded model "
          f"{growth_ratio:.3f}x ({memory['refined']['growth_bytes'] / mib:.0f} vs {memory['traced']['growth_bytes'] / mib:.0f} MiB)")
    print(f"machine: {json.dumps(result['machine']['processor'])}, {result['machine']['cpu_count']} cpus, "
          f"cuda={result['machine']['cuda']}; results: {path}")
    return result


if __name__ == "__main__":
    main()

"""Cost of self-attention refinement (``--classes``): traced vs traced + refined generation.

    python -m benchmarks.refine_cost [--size 512] [--steps 3] [--repeats 2] [--warmup 1] [--device auto]

On the full-size Stable Diffusion 1.5 UNet architecture, built from its config with random weights
(only the UNet matters: the text encoder is a one-layer CLIP of hidden size 768, the VAE and
tokenizer are the built-in tiny model's). Time: both variants alternate in this process
(``common.paired_times``). Memory: each variant runs once in a fresh subprocess, which reports its
peak (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak RSS, ``VmHWM``) and the peak growth
over the loaded model. Prints the ratios (goals: <= 1.15x time, <= 1.1x memory) and writes
benchmarks/results/refine_cost.json with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import torch

from benchmarks.common import machine_info, paired_times, write_result
from transforms.attribution import GenerationConfig, SegmentationConfig, generate_traced
from transforms.attribution.classes import load_vocabulary
from transforms.model_loading import ModelSpec, load_pipeline

PROMPT = "a photo of a cat sitting on a red sofa next to a dog"
VARIANTS = ("traced", "refined")
SD15_UNET = dict(  # Stable Diffusion 1.5's UNet config (diffusers' unet/config.json)
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


def sd15_pipeline(device: str) -> Any:
    """A StableDiffusionPipeline with an SD-1.5-shaped UNet (random weights) on ``device``."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tiny = load_pipeline(ModelSpec("tiny", device="cpu"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    components = {**tiny.components, "unet": unet, "text_encoder": text_encoder}
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def run_variant(pipe: Any, variant: str, args: argparse.Namespace) -> None:
    """One traced generation, refined or not."""
    config = GenerationConfig(steps=args.steps, height=args.size, width=args.size)
    segmentation = SegmentationConfig(load_vocabulary("voc")) if variant == "refined" else None
    generate_traced(pipe, [PROMPT] * args.images, list(range(args.images)), config, segmentation=segmentation)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def measure_memory(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one generation of ``variant`` in this (fresh) process."""
    pipe = sd15_pipeline(args.device)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_kib("VmRSS:") * 1024
    run_variant(pipe, variant, args)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kib("VmHWM:") * 1024
    return {"variant": variant, "kind": "cuda allocated" if cuda else "cpu rss", "base_bytes": base,
            "peak_bytes": peak, "growth_bytes": peak - base}


def memory_in_subprocess(variant: str, argv: list[str]) -> dict[str, Any]:
    """``measure_memory`` of ``variant`` in a fresh interpreter (its peak is not shared)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.refine_cost", *argv, "--memory-of", variant],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
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

    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "memory_of"]
    memory = {variant: memory_in_subprocess(variant, passed) for variant in VARIANTS}
    pipe = sd15_pipeline(args.device)

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
        "what": "traced + refined / traced: seconds per generation and peak memory, SD-1.5 UNet (random weights)",
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
    path = write_result("refine_cost", result)
    mib = 2**20
    print(f"refined/traced time = {time_ratio:.3f}x (goal <= 1.15); {result['seconds_per_image']['refined']:.2f}s vs "
          f"{result['seconds_per_image']['traced']:.2f}s per image at {args.size}px, {args.steps} steps, {args.device}")
    print(f"refined/traced peak memory = {peak_ratio:.3f}x (goal <= 1.1; {memory['refined']['peak_bytes'] / mib:.0f} vs "
          f"{memory['traced']['peak_bytes'] / mib:.0f} MiB {memory['traced']['kind']}); growth over the loaded model "
          f"{growth_ratio:.3f}x ({memory['refined']['growth_bytes'] / mib:.0f} vs {memory['traced']['growth_bytes'] / mib:.0f} MiB)")
    print(f"machine: {json.dumps(result['machine']['processor'])}, {result['machine']['cpu_count']} cpus, "
          f"cuda={result['machine']['cuda']}; results: {path}")
    return result


if __name__ == "__main__":
    main()

"""Images/s of the original daam 0.2.0 (batch 1) vs this project (batch 1 and 4), same model folder.

    python -m benchmarks.daam_reference_throughput [--size 512] [--steps 2] [--repeats 1] [--rounds 1]
        [--reference-python /work/refvenv/bin/python] [--device auto] [--untraced] [--tiny]

Both load one SD-1.5-shaped folder (``benchmarks.shapes.saved("sd15")``: the full-size UNet,
random weights, saved with ``save_pretrained``). daam 0.2.0 runs in its own venv (set up as
``tests/reference/make_daam_reference.py``'s docstring says) through
``benchmarks.daam_reference_side``; it needs 512 px (it hard-codes a 64x64 latent for 512 px
models). This project: ``generate_traced`` at batch 1 and batch 4 (4 prompts per UNet call),
alternating, in this process; with ``--untraced`` also the same calls without the tracer
(``untraced_batch_gain``: what 4 prompts per call gain plain diffusers on this device). Both sides use the same torch thread count and warm up with one
1-step call at batch 1. ``--rounds`` alternates the two sides that many times. ``ratio`` is this
project's batch-4 images/s over daam's (goal: CPU >= 1.25x, GPU >= 4x). Without the reference
venv the project's side is recorded alone, with the reason. Writes
benchmarks/results/daam_reference_throughput.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks import shapes
from benchmarks.common import json_subprocess, paired_times, resolve_device, result_record, synchronize
from benchmarks.common import untraced_generate, write_result
from benchmarks.trace_overhead_real import batch_prompts
from transforms.attribution import GenerationConfig, generate_traced
from transforms.models.loading import ModelSpec, load_pipeline

REFERENCE_PYTHON = "/work/refvenv/bin/python"
GOALS = {"cpu_batch_4_over_daam": 1.25, "gpu_batch_4_over_daam": 4.0}
BATCH = 4


def reference_side(folder: Path, args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """daam 0.2.0's timings in its venv (``RuntimeError`` when it cannot run)."""
    if not Path(args.reference_python).is_file():
        raise RuntimeError(f"no reference venv at {args.reference_python} (set it up as "
                           "tests/reference/make_daam_reference.py's docstring says)")
    argv = [f"--model={folder}", f"--prompt={prompt}", f"--size={args.size}", f"--steps={args.steps}",
            f"--repeats={args.repeats}", f"--threads={torch.get_num_threads()}", f"--device={args.device}",
            *(["--untraced"] if args.untraced else [])]
    return json_subprocess("benchmarks.daam_reference_side", argv, python=args.reference_python)


def project_side(pipe: Any, args: argparse.Namespace, traced: bool = True) -> dict[str, Any]:
    """This project's batch-4 and batch-1 traced generations, alternating (``traced=False``: the
    same pipeline calls without the tracer, i.e. what batching gains plain diffusers here)."""
    config = GenerationConfig(steps=args.steps, height=args.size, width=args.size)
    generate = generate_traced if traced else untraced_generate

    def call(batch: int) -> Any:
        prompts, seeds = batch_prompts(batch)
        return lambda: (generate(pipe, prompts, seeds, config), synchronize(args.device))

    return paired_times(call(BATCH), call(1), args.repeats, warmup=0)


def rate(runs: list[dict[str, Any]], key: str, batch: int) -> float:
    """Images/s of ``batch`` images per call from the median of every run's ``key`` seconds."""
    return batch / statistics.median(t for r in runs for t in r[key])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed generations per side and round")
    parser.add_argument("--rounds", type=int, default=1, help="times the two sides alternate")
    parser.add_argument("--reference-python", default=REFERENCE_PYTHON)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--untraced", action="store_true",
                        help="also time daam's pipeline without trace(), and this project's calls without the tracer")
    parser.add_argument("--tiny", action="store_true", help="shrink every width (a smoke check, not a measurement)")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    folder = shapes.saved("sd15", tiny=args.tiny)
    pipe = load_pipeline(ModelSpec(str(folder), device=args.device))
    prompts, seeds = batch_prompts(1)
    generate_traced(pipe, prompts, seeds, GenerationConfig(steps=1, height=args.size, width=args.size))  # warm-up

    reference: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    reference_error = None
    for _ in range(args.rounds):
        if reference_error is None:
            try:
                reference.append(reference_side(folder, args, prompts[0]))
            except RuntimeError as error:
                reference_error = str(error)
                print(f"daam 0.2.0 side not measured: {reference_error.splitlines()[0]}")
        ours.append(project_side(pipe, args))
        if args.untraced:
            plain.append(project_side(pipe, args, traced=False))

    b4, b1 = rate(ours, "a_seconds", BATCH), rate(ours, "b_seconds", 1)
    images_per_second = {"project_batch_1": b1, f"project_batch_{BATCH}": b4}
    if plain:
        images_per_second["untraced_batch_1"] = rate(plain, "b_seconds", 1)
        images_per_second[f"untraced_batch_{BATCH}"] = rate(plain, "a_seconds", BATCH)
    if reference:
        images_per_second["daam_0.2.0_batch_1"] = rate(reference, "traced_seconds", 1)
        if any(r["untraced_seconds"] for r in reference):
            images_per_second["daam_0.2.0_untraced_batch_1"] = rate(reference, "untraced_seconds", 1)
    daam_rate = images_per_second.get("daam_0.2.0_batch_1")
    result = result_record(
        "daam_reference_throughput", b4 / daam_rate if daam_rate else None, args.device,
        ratio_is=f"this project's batch-{BATCH} images/s over daam 0.2.0's (batch 1), same model folder and settings",
        what="images/s of traced generation: daam 0.2.0 (its own venv) vs this project, SD-1.5-shaped folder",
        settings={**vars(args), "model_folder": str(folder), "denoiser_parameters": shapes.parameters(pipe)},
        goals=GOALS,
        images_per_second=images_per_second,
        batch_1_over_daam=b1 / daam_rate if daam_rate else None,
        reference_error=reference_error,
        reference=reference,
        project=ours,
        untraced=plain,
        untraced_batch_gain=(images_per_second[f"untraced_batch_{BATCH}"] / images_per_second["untraced_batch_1"]
                             if plain else None),
    )
    path = write_result("daam_reference_throughput", result)
    where = f"{args.size}px, {args.steps} steps, {args.device}"
    print(", ".join(f"{k} {v:.4f} images/s" for k, v in images_per_second.items()) + f" ({where})")
    if daam_rate:
        print(f"batch {BATCH} / daam 0.2.0 = {result['ratio']:.3f}x (goal >= 1.25 CPU, >= 4 GPU); "
              f"batch 1 / daam = {result['batch_1_over_daam']:.3f}x; results: {path}")
    return result


if __name__ == "__main__":
    main()

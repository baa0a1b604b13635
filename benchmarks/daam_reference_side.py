"""The original daam 0.2.0's side of ``benchmarks.daam_reference_throughput``: run in its own venv.

    /work/refvenv/bin/python -m benchmarks.daam_reference_side --model PATH [--size 512] [--steps 2]
        [--repeats 1] [--threads N] [--device cpu] [--untraced]

The venv is the one ``tests/reference/make_daam_reference.py``'s docstring sets up (daam 0.2.0,
diffusers 0.21.2, transformers 4.30.2); the model folder is loaded with that script's
``load_pipeline`` (its two compatibility workarounds). Each timed generation is the daam README's
``with trace(pipe) as tc: pipe(...)`` followed by ``tc.compute_global_heat_map()`` (the per-token
maps), batch 1, after one 1-step warm-up call. Prints one JSON line: seconds per image, versions.
Imports nothing of the project but ``benchmarks.common.paired_times`` (standard library only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import daam
import diffusers
import torch
import transformers
from daam import trace

from benchmarks.common import paired_times
from tests.reference.make_daam_reference import GUIDANCE_SCALE, load_pipeline


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompt", default="a photo of a cat sitting on a red sofa")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--untraced", action="store_true", help="also time daam's pipeline without trace()")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipe, workarounds = load_pipeline(args.model)
    pipe = pipe.to(args.device)
    load_seconds = time.perf_counter() - started

    def generate(steps: int) -> Any:
        return pipe(args.prompt, num_inference_steps=steps, guidance_scale=GUIDANCE_SCALE, height=args.size,
                    width=args.size, generator=torch.Generator("cpu").manual_seed(0))

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def traced(steps: int = args.steps) -> None:
        with trace(pipe) as tc:
            generate(steps)
            tc.compute_global_heat_map()
        sync()

    def untraced() -> None:
        generate(args.steps)
        sync()

    traced(1)  # warm-up: every weight touched, kernels chosen
    if args.untraced:
        timing = paired_times(traced, untraced, args.repeats, warmup=0)
        traced_seconds, untraced_seconds = timing["a_seconds"], timing["b_seconds"]
    else:
        traced_seconds, untraced_seconds = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            traced()
            traced_seconds.append(time.perf_counter() - start)
    result = {
        "traced_seconds": traced_seconds,
        "untraced_seconds": untraced_seconds,
        "load_seconds": load_seconds,
        "compatibility_workarounds": workarounds,
        "torch_threads": torch.get_num_threads(),
        "versions": {"daam": daam.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

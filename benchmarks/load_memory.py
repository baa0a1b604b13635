"""Peak memory of loading a model folder, with diffusers' ``low_cpu_mem_usage`` (``accelerate``
installed: weights loaded into an empty model) and without (a randomly initialised model first,
then the weights copied in).

    python -m benchmarks.load_memory [--model sd15|sd21|sdxl|tiny|PATH] [--dtype float32] [--repeats 1]

Each load runs in a fresh interpreter (``common.json_subprocess``); the peak is its ``VmHWM``
after ``transforms.models.loading.load_pipeline`` on CPU, the baseline its RSS after the imports;
``touched`` is the peak once every weight was read (safetensors weights may stay memory-mapped,
not resident, until first used).
``--model`` takes a shape's name (``benchmarks.shapes.saved``: a full-size denoiser with random
weights, saved with ``save_pretrained``). ``ratio``: low-memory peak growth over the default
loader's, once every weight was read. Writes benchmarks/results/load_memory_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchmarks import shapes
from benchmarks.common import json_subprocess, result_record, status_kib, write_result

VARIANTS = {"low_cpu_mem_usage": True, "full_init": False}


def child(model: str, dtype: str, low_memory: bool) -> dict[str, Any]:
    """Load ``model`` once in this process; its memory before, at the peak and once every weight
    was read, and the seconds."""
    import torch

    from transforms.models.loading import ModelSpec, load_pipeline

    before = status_kib("VmRSS:") * 1024
    start = time.perf_counter()
    pipe = load_pipeline(ModelSpec(model, device="cpu", dtype=dtype), low_memory=low_memory)
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM:") * 1024
    parameters = [p for c in pipe.components.values() if isinstance(c, torch.nn.Module) for p in c.parameters()]
    with torch.no_grad():
        for p in parameters:
            p.sum()
    return {"before_bytes": before, "peak_bytes": peak, "growth_bytes": peak - before, "seconds": seconds,
            "touched_growth_bytes": status_kib("VmHWM:") * 1024 - before,
            "weight_bytes": sum(p.numel() * p.element_size() for p in parameters)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15", help=f"a model folder, a built-in model, or a shape: {', '.join(shapes.SHAPES)}")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.dtype, VARIANTS[args.child])))
        return {}
    shape = args.model if args.model in shapes.SHAPES else None
    model = str(shapes.saved(shape)) if shape else args.model
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name in VARIANTS:
            runs[name].append(json_subprocess("benchmarks.load_memory", ["--model", model, "--dtype", args.dtype, "--child", name]))
    growth = {name: statistics.median(r["growth_bytes"] for r in rs) for name, rs in runs.items()}
    touched = {name: statistics.median(r["touched_growth_bytes"] for r in rs) for name, rs in runs.items()}
    result = result_record(
        f"load_memory_{args.dtype}", touched["low_cpu_mem_usage"] / touched["full_init"], "cpu",
        ratio_is="peak RSS growth of loading and reading every weight, low_cpu_mem_usage over the full initialisation",
        settings={**vars(args), "shape": shape}, growth_bytes=growth, touched_growth_bytes=touched, runs=runs,
    )
    path = write_result(f"load_memory_{args.dtype}", result)
    weights = runs["full_init"][0]["weight_bytes"]
    for name, value in growth.items():
        seconds = statistics.median(r["seconds"] for r in runs[name])
        print(f"{name}: +{value / 2**30:.2f} GiB peak RSS loading, +{touched[name] / 2**30:.2f} GiB once every weight "
              f"was read ({weights / 2**30:.2f} GiB of weights), {seconds:.1f} s")
    print(f"ratio {result['ratio']:.2f}; results: {path}")
    return result


if __name__ == "__main__":
    main()

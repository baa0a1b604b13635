"""Images/s on Dask with 2 workers × 1 thread vs 1 × 1 and 1 × 2, and Dask (1 worker) vs FnApiRunner.

    python -m benchmarks.dask_scaling [--prompts 48] [--size 128] [--steps 10] [--repeats 2]

Each configuration is a full ``daam-datasets run`` in a fresh process on the same corpus (tiny
model), into a fresh output; configurations run interleaved, in a rotated order each repeat. Two
rates per run:

- ``steady``: images committed after the first W shard markers (W = worker processes) divided by
  the time from the W-th to the last marker: generation throughput once every worker has its
  model, without process start, imports and model loading.
- ``end_to_end``: images / wall-clock seconds of the whole command (start-up included, which
  dominates small corpora).

Also recorded: the median generation time per shard measured inside the worker (``seconds`` of the
shard's stats), which compares the workers' speed without any runner overhead.

Prints the ratios (goals: 2×1 / 1×1 >= 1.7 steady; Dask 1 worker / FnApiRunner >= 0.9) and writes
benchmarks/results/dask_scaling.json with the machine, versions and every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine_info, write_result
from benchmarks.trace_overhead import PROMPTS

ROOT = Path(__file__).resolve().parent.parent

# name: (extra arguments, worker processes)
CONFIGS: dict[str, tuple[list[str], int]] = {
    "dask_2x1": (["--runner", "dask", "--dask-workers", "2", "--torch-threads", "1"], 2),
    "dask_1x1": (["--runner", "dask", "--dask-workers", "1", "--torch-threads", "1"], 1),
    "dask_1x2": (["--runner", "dask", "--dask-workers", "1", "--torch-threads", "2"], 1),
    "fnapi_x2": (["--runner", "FnApiRunner", "--torch-threads", "2"], 1),
}
RATIOS = {
    "dask_2x1_over_1x1": ("dask_2x1", "dask_1x1"),
    "dask_2x1_over_1x2": ("dask_2x1", "dask_1x2"),
    "dask_1x2_over_fnapi": ("dask_1x2", "fnapi_x2"),
}


def corpus(path: Path, n: int) -> Path:
    """``n`` distinct prompts (the trace benchmark's, numbered)."""
    lines = [f"{PROMPTS[i % len(PROMPTS)]}, variant {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_run(name: str, prompts: Path, out: Path, settings: list[str]) -> dict:
    """Run one configuration; rates from the wall clock and the shard markers' times."""
    extra, workers = CONFIGS[name]
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--prompts", str(prompts), "--output", str(out), *settings, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    stats = [(p.stat().st_mtime, json.loads(p.read_text())) for p in (out / "_stats").glob("*.json")]
    markers = sorted((mtime, s["rows"]) for mtime, s in stats)
    rows = sum(r for _, r in markers)
    t_w, t_last = markers[workers - 1][0], markers[-1][0]
    steady_rows = sum(r for _, r in markers[workers:])
    return {
        "config": name,
        "rows": rows,
        "wall_seconds": wall,
        "end_to_end_images_per_s": rows / wall,
        "steady_images_per_s": steady_rows / (t_last - t_w) if t_last > t_w else None,
        "steady_window_seconds": t_last - t_w,
        "shard_generation_seconds_median": statistics.median(s["seconds"] for _, s in stats),
        "load_average_before": load_before,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    settings = [
        "--steps", str(args.steps), "--height", str(args.size), "--width", str(args.size),
        "--shard-size", str(args.shard_size), "--batch-size", str(args.batch_size),
    ]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dask-scaling-") as tmp:
        prompts = corpus(Path(tmp) / "prompts.txt", args.prompts)
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[: repeat % len(names)]
            for name in order:
                run = one_run(name, prompts, Path(tmp) / f"{name}-{repeat}", settings)
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"  {name:10s} repeat {repeat}: steady {run['steady_images_per_s']:.2f} img/s, "
                    f"end-to-end {run['end_to_end_images_per_s']:.2f} img/s ({run['wall_seconds']:.1f}s), "
                    f"{run['shard_generation_seconds_median']:.2f} s generation per shard ("
                    f"load avg before {run['load_average_before']:.2f})",
                    flush=True,
                )
    per_config = {}
    for name in names:
        mine = [r for r in runs if r["config"] == name]
        per_config[name] = {
            "steady_images_per_s_median": statistics.median(r["steady_images_per_s"] for r in mine),
            "end_to_end_images_per_s_median": statistics.median(r["end_to_end_images_per_s"] for r in mine),
            "shard_generation_seconds_median": statistics.median(r["shard_generation_seconds_median"] for r in mine),
        }
    ratios = {}
    for label, (a, b) in RATIOS.items():
        if a in per_config and b in per_config:
            ratios[label] = {
                kind: per_config[a][f"{kind}_images_per_s_median"] / per_config[b][f"{kind}_images_per_s_median"]
                for kind in ("steady", "end_to_end")
            }
    result = {
        "benchmark": "dask_scaling",
        "what": "images/s of daam-datasets run on Dask local clusters and FnApiRunner, tiny model, same corpus",
        "settings": vars(args),
        "configs": {n: CONFIGS[n][0] for n in names},
        "per_config": per_config,
        "ratios": ratios,
        "runs": runs,
        "machine": machine_info(),
    }
    import importlib.metadata as md

    for lib in ("dask", "distributed"):
        result["machine"]["versions"][lib] = md.version(lib)
    path = write_result("dask_scaling", result)
    m = result["machine"]
    print(f"machine: {m['platform']}, {m['cpu_count']} CPUs, cuda={m['cuda']}; versions {json.dumps(m['versions'])}")
    for label, values in ratios.items():
        print(f"{label}: steady {values['steady']:.2f}x, end-to-end {values['end_to_end']:.2f}x")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

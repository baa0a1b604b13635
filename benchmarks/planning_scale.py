"""Driver planning at corpus scale: peak RSS and seconds of reading, identifying and sharding a
corpus and writing its manifests, as ``run`` does before the first image.

    python -m benchmarks.planning_scale [--sizes 10000,1000000,10000000] [--shard-size 1000] [--in-memory-up-to 1000000] [--one-process-up-to N] [--workers N]

Each size runs in a fresh interpreter (``common.json_subprocess``) on a generated .txt corpus (one
prompt a line, 1 % repeated so repeat ids are exercised), side by side in one process and in
``--workers`` processes (default: the cores, up to 8; ``transforms.corpus.lanes``): ``scan`` is
``scan_corpus`` (one streaming pass, ids checked in buckets), ``manifests`` streams the prompts back
into per-shard manifests of a local output (``pipeline.output.write_scan_manifests``). ``base`` is
the RSS after the imports (``child_peak``: the largest planning process'); the goal is peak ≤ base
+ 256 MiB at 10 M prompts, ≥ 200 k prompts/s, time linear. Above ``--one-process-up-to`` prompts
only the several processes run (the one-process time is linear: 100 M would take 17 minutes more). For comparison, up
to ``--in-memory-up-to`` prompts, the same corpus read into a list (``read_corpus``: what planning
held before it streamed). Writes benchmarks/results/planning_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import json_subprocess, result_record, status_kib, write_result

WORDS = ["a red fox", "two owls", "an old lighthouse", "a bowl of ramen", "a city at night", "a cat on a sofa"]


def write_corpus(path: Path, prompts: int) -> None:
    """``prompts`` lines, every hundredth a repeat of an earlier one."""
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, prompts, 100_000):
            lines = [f"{WORDS[i % len(WORDS)]}, photo number {i // 100 * 100 if i % 100 == 99 else i}\n"
                     for i in range(start, min(start + 100_000, prompts))]
            fh.write("".join(lines))


def child(corpus: str, shard_size: int, in_memory: bool, workers: int) -> dict[str, Any]:
    """Plan ``corpus`` once from this process (with ``workers`` processes): seconds per phase and memory."""
    import resource

    from pipeline.output import write_scan_manifests
    from transforms.corpus import read_corpus, scan_corpus
    from transforms.shards.layout import OutputLayout
    from transforms.shards.sharding import plan_shards

    base = status_kib("VmRSS:") * 1024
    if in_memory:
        start = time.perf_counter()
        prompts = len(read_corpus(corpus).prompts)
        return {"base_bytes": base, "peak_bytes": status_kib("VmHWM:") * 1024, "prompts": prompts,
                "read_seconds": time.perf_counter() - start}
    output = tempfile.mkdtemp(prefix="plan-out-")
    try:
        start = time.perf_counter()
        scan = scan_corpus(corpus, workers=workers)
        scanned = time.perf_counter()
        specs = plan_shards(scan.num_prompts, shard_size)
        write_scan_manifests(OutputLayout(output), scan, specs, {s.name for s in specs}, workers)
        done = time.perf_counter()
        scan.close()
        manifest_bytes = sum(f.stat().st_size for f in Path(output).rglob("*") if f.is_file())
    finally:
        shutil.rmtree(output, ignore_errors=True)
    return {"base_bytes": base, "peak_bytes": status_kib("VmHWM:") * 1024, "prompts": scan.num_prompts,
            "shards": len(specs), "scan_seconds": scanned - start, "manifest_seconds": done - scanned,
            "seconds": done - start, "manifest_bytes": manifest_bytes, "workers": workers, "lanes": len(scan.spills),
            "child_peak_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def _timing(run: dict, size: int) -> str:
    growth = (max(run["peak_bytes"], run.get("child_peak_bytes", 0)) - run["base_bytes"]) / 2**20
    return (f"peak RSS base + {growth:.0f} MiB, {run['seconds']:.1f} s ({size / run['seconds']:,.0f} prompts/s; "
            f"scan {run['scan_seconds']:.1f} s, manifests {run['manifest_seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--in-memory-up-to", type=int, default=1_000_000)
    parser.add_argument("--one-process-up-to", type=int, default=None, help="plan in one process too only up to this size (default: every size)")
    parser.add_argument("--workers", type=int, default=None, help="planning processes beside one (default: the cores, up to 8)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.shard_size, args.in_memory, args.workers or 1)))
        return {}
    from transforms.corpus.processes import default_workers

    workers = args.workers or default_workers()
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="plan-corpus-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            corpus = folder / f"prompts-{size}.txt"
            write_corpus(corpus, size)
            plan = ["--child", str(corpus), "--shard-size", str(args.shard_size), "--workers"]
            row: dict[str, Any] = {"size": size, "corpus_bytes": corpus.stat().st_size}
            if args.one_process_up_to is None or size <= args.one_process_up_to:
                row["streaming"] = json_subprocess("benchmarks.planning_scale", [*plan, "1"])
            row["parallel"] = json_subprocess("benchmarks.planning_scale", [*plan, str(workers)])
            if size <= args.in_memory_up_to:
                row["in_memory"] = json_subprocess("benchmarks.planning_scale", ["--child", str(corpus), "--in-memory"])
            corpus.unlink()
            rows.append(row)
            p = row["parallel"]
            line = f"{size:>11,} prompts: {workers} processes ({p['lanes']} lanes): {_timing(p, size)}"
            if "streaming" in row:
                row["speedup"] = row["streaming"]["seconds"] / p["seconds"]
                line += f"; one process: {_timing(row['streaming'], size)}; {row['speedup']:.2f}x"
            if "in_memory" in row:
                m = row["in_memory"]
                line += f"; held in a list: base + {(m['peak_bytes'] - m['base_bytes']) / 2**20:.0f} MiB"
            print(line, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    largest = rows[-1]["parallel"]
    result = result_record(
        "planning_scale", (max(largest["peak_bytes"], largest["child_peak_bytes"]) - largest["base_bytes"]) / 2**20, "cpu",
        ratio_is=f"peak RSS growth over the post-import base in MiB of the largest planning process at the largest size, {workers} processes (goal <= 256 at 10 M)",
        settings={"sizes": args.sizes, "shard_size": args.shard_size, "workers": workers, "tmpdir": os.environ.get("TMPDIR", "/tmp")}, rows=rows,
    )
    path = write_result("planning_scale", result)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()

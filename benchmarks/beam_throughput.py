"""Beam end-to-end throughput vs a bare Python loop doing the same work, and 2 worker processes
vs 1, measured side by side in one run.

    python -m benchmarks.beam_throughput [--prompts 32] [--size 256] [--steps 6] [--repeats 3]

A: `daam-datasets run` on FnApiRunner (in-process); B: the same shards generated and committed by a
plain loop over `ShardGenerator` + `commit_shard` (no Beam). Both load the model and write Parquet.
Then whole CLI processes: 2 workers x 1 torch thread (multi-process FnApiRunner) vs 1 worker x 1
thread and vs 1 worker x 2 threads. Writes benchmarks/results/beam_throughput.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.common import machine_info, paired_times, write_result
from pipeline.options import RunSettings
from pipeline.driver import run
from pipeline.graph import build_generator
from schemas.record import build_features
from transforms.attribution import GenerationConfig
from transforms.layout import OutputLayout
from transforms.model_loading import model_geometry
from transforms.corpus import read_corpus
from transforms.sharding import plan_shards, shard_prompts
from transforms.sinks import commit_shard

WORDS = ["cat", "dog", "red ball", "lighthouse", "bicycle", "horse", "coffee", "sailboat", "kite", "teddy bear"]


def _corpus(folder: Path, count: int) -> Path:
    path = folder / "prompts.txt"
    path.write_text("".join(f"a photo of a {WORDS[i % len(WORDS)]} number {i}\n" for i in range(count)))
    return path


def _settings(corpus: Path, output: Path, args: argparse.Namespace, threads: int | None = None) -> RunSettings:
    return RunSettings(
        prompts=str(corpus), output=str(output), batch_size=args.batch_size, shard_size=args.shard_size,
        generation=GenerationConfig(steps=args.steps, height=args.size, width=args.size),
        overwrite=True, torch_threads=threads,
    )


def bare_loop(settings: RunSettings) -> None:
    """The same work as the pipeline, without Beam."""
    if Path(settings.output).exists():
        shutil.rmtree(settings.output)
    corpus = read_corpus(settings.prompts, settings.seed)
    generator = build_generator(settings.to_dict())
    layout = OutputLayout(settings.output)
    _, _, scale = model_geometry(settings.model)
    features = build_features(settings.generation.height // scale, settings.generation.width // scale)
    for spec in plan_shards(len(corpus.prompts), settings.shard_size):
        result = generator.run_shard(spec, shard_prompts(corpus.prompts, spec))
        commit_shard(layout, result, ("parquet",), features, "bench")


def cli_run(corpus: Path, output: Path, args: argparse.Namespace, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--prompts", str(corpus), "--output", str(output),
           "--steps", str(args.steps), "--height", str(args.size), "--width", str(args.size),
           "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--overwrite", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="daam-bench-"))
    corpus = _corpus(work, args.prompts)
    beam_settings = _settings(corpus, work / "beam", args)
    bare_settings = _settings(corpus, work / "bare", args)
    options = PipelineOptions(["--runner=FnApiRunner"])

    in_process = paired_times(lambda: run(beam_settings, options), lambda: bare_loop(bare_settings), args.repeats)
    two_vs_one = paired_times(
        lambda: cli_run(corpus, work / "mp2", args, ["--torch-threads", "1", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
        lambda: cli_run(corpus, work / "mp1", args, ["--torch-threads", "1", "--direct_num_workers=1", "--direct_running_mode=multi_processing"]),
        args.repeats,
    )
    two_vs_threads = paired_times(
        lambda: cli_run(corpus, work / "mp2", args, ["--torch-threads", "1", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
        lambda: cli_run(corpus, work / "t2", args, ["--torch-threads", "2"]),
        args.repeats,
    )
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "beam_throughput",
        "settings": vars(args),
        "beam_over_bare_throughput": 1 / in_process["ratio_median"],
        "two_workers_over_one_throughput": 1 / two_vs_one["ratio_median"],
        "two_workers_over_one_worker_two_threads_throughput": 1 / two_vs_threads["ratio_median"],
        "timing": {"beam_vs_bare": in_process, "mp2_vs_mp1": two_vs_one, "mp2_vs_threads2": two_vs_threads},
        "machine": machine_info(),
    }
    path = write_result("beam_throughput", result)
    print(f"Beam FnApiRunner / bare loop throughput: {result['beam_over_bare_throughput']:.3f}x "
          f"(beam {in_process['a_median']:.1f}s, bare {in_process['b_median']:.1f}s for {args.prompts} prompts)")
    print(f"2 worker processes x 1 thread / 1 x 1: {result['two_workers_over_one_throughput']:.3f}x "
          f"({two_vs_one['a_median']:.1f}s vs {two_vs_one['b_median']:.1f}s, whole CLI processes)")
    print(f"2 worker processes x 1 thread / 1 process x 2 threads: "
          f"{result['two_workers_over_one_worker_two_threads_throughput']:.3f}x")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"benchmark took {time.time() - started:.0f}s")

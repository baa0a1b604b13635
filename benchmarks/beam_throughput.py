"""Beam end-to-end throughput vs a bare Python loop doing the same work, the share of wall time
the denoiser is busy, and 2 worker processes vs 1, measured side by side in one run.

    python -m benchmarks.beam_throughput [--model tiny|sd15|sd21|sdxl|PATH] [--prompts 32] [--size 256]
        [--steps 6] [--batch-size 4] [--shard-size 8] [--repeats 3] [--warmup 1] [--device auto]
        [--no-processes] [--name NAME]

A: `daam-datasets run` on FnApiRunner (in-process); B: the same shards generated and committed by a
plain loop over `ShardGenerator` + `commit_shard` (no Beam). Both load the model and write Parquet.
``--model`` takes a model folder, or a real shape's name (``benchmarks.shapes.saved``: the
published denoiser at full size, random weights). During both, the denoiser's ``forward`` is timed
(``common.CallTimer``; CUDA synchronised at each call's end): ``denoiser_busy`` is that time over
the run's wall time, and over the generation phase (first denoiser call to the end of the run:
model loading excluded). Then, unless ``--no-processes``, whole CLI processes: 2 workers x 1 torch
thread (multi-process FnApiRunner) vs 1 worker x 1 thread and vs 1 worker x 2 threads. ``ratio``
is Beam's images/s over the bare loop's (goal >= 0.95). Writes benchmarks/results/NAME.json
(``--name``; default ``beam_throughput`` for the tiny model, else ``pipeline_efficiency``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks import shapes
from benchmarks.common import CallTimer, paired_times, resolve_device, result_record, write_result
from pipeline.options import RunSettings
from pipeline.driver import run
from pipeline.graph import build_generator
from schemas.record import build_features
from transforms.attribution import GenerationConfig
from transforms.shards.layout import OutputLayout
from transforms.models.loading import ModelSpec, model_geometry, resolve_model_source
from transforms.corpus import read_corpus
from transforms.shards.sharding import plan_shards, shard_prompts
from transforms.shards.sinks import commit_shard

WORDS = ["cat", "dog", "red ball", "lighthouse", "bicycle", "horse", "coffee", "sailboat", "kite", "teddy bear"]


def _corpus(folder: Path, count: int) -> Path:
    path = folder / "prompts.txt"
    path.write_text("".join(f"a photo of a {WORDS[i % len(WORDS)]} number {i}\n" for i in range(count)))
    return path


def _settings(corpus: Path, output: Path, args: argparse.Namespace, threads: int | None = None) -> RunSettings:
    return RunSettings(
        prompts=str(corpus), output=str(output), model=ModelSpec(args.model, device=args.device),
        batch_size=args.batch_size, shard_size=args.shard_size,
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


def denoiser_class(model: str) -> Any:
    """The denoiser's class of a diffusers model folder (``unet`` or ``transformer`` in its
    ``model_index.json``)."""
    import diffusers

    index = json.loads((Path(resolve_model_source(model)) / "model_index.json").read_text(encoding="utf-8"))
    _library, name = index.get("unet") or index["transformer"]
    return getattr(diffusers, name)


class BusyRuns:
    """Runs ``run()`` with the denoiser's ``forward`` timed; keeps each run's wall and busy seconds."""

    def __init__(self, run: Callable[[], Any], denoiser: Any, device: str) -> None:
        self.run, self.denoiser, self.device = run, denoiser, device
        self.runs: list[dict[str, float]] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        with CallTimer(self.denoiser, "forward", self.device) as timer:
            self.run()
        end = time.perf_counter()
        generating = end - (timer.first_start or end)
        self.runs.append({"wall_seconds": end - start, "denoiser_seconds": timer.seconds, "denoiser_calls": timer.calls,
                          "generation_phase_seconds": generating})

    def summary(self, warmup: int = 0) -> dict[str, Any]:
        """Median busy shares of the wall time and of the generation phase over the runs after the
        first ``warmup`` (a warm-up run also loads the model), and every run."""
        timed = self.runs[warmup:]
        return {
            "busy_share_of_wall": statistics.median(r["denoiser_seconds"] / r["wall_seconds"] for r in timed),
            "busy_share_of_generation": statistics.median(
                r["denoiser_seconds"] / r["generation_phase_seconds"] for r in timed if r["generation_phase_seconds"]),
            "warmup_runs": warmup,
            "runs": self.runs,
        }


def cli_run(corpus: Path, output: Path, args: argparse.Namespace, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--prompts", str(corpus), "--output", str(output),
           "--model", args.model, "--device", args.device,
           "--steps", str(args.steps), "--height", str(args.size), "--width", str(args.size),
           "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--overwrite", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help=f"a model folder, a built-in model, or a shape: {', '.join(shapes.SHAPES)}")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed Beam + bare rounds first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--processes", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare whole CLI processes (2 workers vs 1, vs 2 threads)")
    parser.add_argument("--name", default=None, help="result name (default: beam_throughput for tiny, else pipeline_efficiency)")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    shape = args.model if args.model in shapes.SHAPES else None
    if shape:
        args.model = str(shapes.saved(shape))
    name = args.name or ("beam_throughput" if args.model == "tiny" else "pipeline_efficiency")
    work = Path(tempfile.mkdtemp(prefix="daam-bench-"))
    corpus = _corpus(work, args.prompts)
    beam_settings = _settings(corpus, work / "beam", args)
    bare_settings = _settings(corpus, work / "bare", args)
    options = PipelineOptions(["--runner=FnApiRunner"])
    denoiser = denoiser_class(args.model)
    beam = BusyRuns(lambda: run(beam_settings, options), denoiser, args.device)
    bare = BusyRuns(lambda: bare_loop(bare_settings), denoiser, args.device)

    in_process = paired_times(beam, bare, args.repeats, args.warmup)
    timing = {"beam_vs_bare": in_process}
    if args.processes:
        two = ["--torch-threads", "1", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        one = ["--torch-threads", "1", "--direct_num_workers=1", "--direct_running_mode=multi_processing"]
        timing["mp2_vs_mp1"] = paired_times(lambda: cli_run(corpus, work / "mp2", args, two),
                                            lambda: cli_run(corpus, work / "mp1", args, one), args.repeats)
        timing["mp2_vs_threads2"] = paired_times(lambda: cli_run(corpus, work / "mp2", args, two),
                                                 lambda: cli_run(corpus, work / "t2", args, ["--torch-threads", "2"]),
                                                 args.repeats)
    shutil.rmtree(work, ignore_errors=True)
    beam_busy, bare_busy = beam.summary(args.warmup), bare.summary(args.warmup)
    ratio = 1 / in_process["ratio_median"]
    result = result_record(
        name, ratio, args.device,
        benchmark="beam_throughput",
        ratio_is="Beam (FnApiRunner, daam-datasets run) images/s over a bare loop's, same shards and model",
        settings={**vars(args), "shape": shape},
        goals={"beam_over_bare": 0.95, "denoiser_busy_share": 0.95},
        beam_over_bare_throughput=ratio,
        images_per_second={"beam": args.prompts / in_process["a_median"], "bare": args.prompts / in_process["b_median"]},
        denoiser_busy={"beam": beam_busy, "bare": bare_busy},
        two_workers_over_one_throughput=1 / timing["mp2_vs_mp1"]["ratio_median"] if args.processes else None,
        two_workers_over_one_worker_two_threads_throughput=(
            1 / timing["mp2_vs_threads2"]["ratio_median"] if args.processes else None),
        timing=timing,
    )
    path = write_result(name, result)
    print(f"Beam FnApiRunner / bare loop throughput: {ratio:.3f}x (goal >= 0.95; "
          f"beam {in_process['a_median']:.1f}s, bare {in_process['b_median']:.1f}s for {args.prompts} prompts)")
    for side, busy in (("beam", beam_busy), ("bare", bare_busy)):
        print(f"{side}: denoiser busy {100 * busy['busy_share_of_wall']:.1f}% of the wall time, "
              f"{100 * busy['busy_share_of_generation']:.1f}% of the generation phase (goal >= 95%)")
    if args.processes:
        print(f"2 worker processes x 1 thread / 1 x 1: {result['two_workers_over_one_throughput']:.3f}x "
              f"({timing['mp2_vs_mp1']['a_median']:.1f}s vs {timing['mp2_vs_mp1']['b_median']:.1f}s, whole CLI processes)")
        print(f"2 worker processes x 1 thread / 1 process x 2 threads: "
              f"{result['two_workers_over_one_worker_two_threads_throughput']:.3f}x")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"benchmark took {time.time() - started:.0f}s")

"""The issue-16 GPU measurements as one prepared run, for a short loan of a CUDA machine.

    python -m benchmarks.gpu_suite [--only trace_overhead,memory,...] [--results DIR] [--smoke]

Runs, in this order (each one's own module, its result JSON under ``--results``, default
``benchmarks/results/gpu``, so CPU results are never overwritten): ``trace_overhead`` (SD-1.5
at batch 1, 8, 16 and SDXL at batch 1, 8; 512 px, 20 steps, float16), ``daam_reference``
(images/s vs daam 0.2.0, recorded alone where its venv is missing), ``memory`` (SDXL at
1024 px, 2/4/8 steps) and ``beam`` (256 prompts through Beam vs a bare loop, denoiser busy
share). A step that fails is recorded with its error and the next one runs. Writes
``gpu_suite.json`` (each step: status, seconds, headline ratio) beside them. ``--smoke`` runs
every step at its tiniest settings on the CPU (checks the suite, measures nothing).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import beam_throughput, common, daam_reference_throughput, memory_traced, trace_overhead_real

logger = logging.getLogger(__name__)

# step -> (module's main, GPU arguments, smoke arguments)
STEPS: dict[str, tuple[Callable[[list[str]], Any], list[str], list[str]]] = {
    "trace_overhead": (
        trace_overhead_real.main,
        ["--shapes", "sd15,sdxl", "--batches", "1,8,16", "--shape-batches", "sdxl=1,8", "--size", "512",
         "--steps", "20", "--dtype", "float16", "--device", "cuda", "--name", "trace_overhead_gpu"],
        ["--tiny", "--shapes", "sd15", "--batches", "1", "--shape-batches", "--size", "64", "--steps", "1",
         "--warmup", "0", "--name", "trace_overhead_gpu"],
    ),
    "daam_reference": (
        daam_reference_throughput.main,
        ["--size", "512", "--steps", "20", "--untraced", "--device", "cuda"],
        ["--tiny", "--size", "64", "--steps", "1", "--reference-python", "/nonexistent/python"],
    ),
    "memory": (
        memory_traced.main,
        ["--shape", "sdxl", "--size", "1024", "--steps", "2,4,8", "--device", "cuda", "--dtype", "float16"],
        ["--tiny", "--size", "64", "--steps", "1,2"],
    ),
    "beam": (
        beam_throughput.main,
        ["--model", "sd15", "--prompts", "256", "--size", "512", "--steps", "20", "--batch-size", "8",
         "--shard-size", "64", "--no-processes", "--device", "cuda", "--name", "pipeline_efficiency_gpu"],
        ["--model", "tiny", "--prompts", "2", "--size", "64", "--steps", "1", "--batch-size", "2", "--shard-size", "2",
         "--repeats", "1", "--warmup", "0", "--no-processes", "--name", "pipeline_efficiency_gpu"],
    ),
}


def headline(result: Any) -> float | None:
    """The ``ratio`` of a step's result (a dict, or the first of a list)."""
    first = result[0] if isinstance(result, list) and result else result
    return first.get("ratio") if isinstance(first, dict) else None


def run_step(name: str, smoke: bool) -> dict[str, Any]:
    """One step: its status (``ok`` / ``failed``), seconds, headline ratio or error."""
    main, gpu_argv, smoke_argv = STEPS[name]
    start = time.perf_counter()
    try:
        result = main(smoke_argv if smoke else gpu_argv)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - a failed step is recorded, the next one runs
        logger.exception("step %s failed", name)
        return {"status": "failed", "seconds": time.perf_counter() - start, "error": f"{type(error).__name__}: {error}"}
    return {"status": "ok", "seconds": time.perf_counter() - start, "ratio": headline(result)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    parser.add_argument("--results", default=str(common.RESULTS / "gpu"), help="folder for the result JSON files")
    parser.add_argument("--smoke", action="store_true", help="tiniest settings on the CPU (a check of the suite)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        parser.error(f"--only: choose from {', '.join(STEPS)}, got {args.only!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    common.RESULTS = Path(args.results)  # every step's write_result lands here
    steps = {}
    for name in names:
        steps[name] = run_step(name, args.smoke)
        print(f"gpu_suite: {name} {steps[name]['status']} in {steps[name]['seconds']:.0f}s", flush=True)
    done = sum(step["status"] == "ok" for step in steps.values())
    result = common.result_record("gpu_suite", done / len(steps), "cpu" if args.smoke else "cuda",
                                  ratio_is="share of the steps that completed", smoke=args.smoke, steps=steps)
    path = common.write_result("gpu_suite", result)
    print(f"gpu_suite: {done} of {len(steps)} steps done; results: {path.parent}")
    return result


if __name__ == "__main__":
    main()

"""Shared helpers for ratio benchmarks: machine/version facts, timing pairs, JSON results, peak
memory in a fresh process, time spent inside a function, the untraced twin of a traced call."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).parent / "results"
REPOSITORY = Path(__file__).parent.parent


def machine_info() -> dict[str, Any]:
    """Machine, accelerator and library versions, recorded with every result."""
    import torch

    from pipeline.summary import library_versions

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),  # 1, 5, 15 minutes: others' work on a shared machine
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": library_versions(),
    }


def paired_times(a: Callable[[], Any], b: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Time ``a`` and ``b`` alternately (A B A B …) after a warm-up; ratios pair by pair."""
    for _ in range(warmup):
        a()
        b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, bucket in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    ratios = [x / y for x, y in zip(times_a, times_b)]
    return {
        "a_seconds": times_a,
        "b_seconds": times_b,
        "a_median": statistics.median(times_a),
        "b_median": statistics.median(times_b),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def device_name(device: str) -> str:
    """The accelerator's name for a CUDA ``device``, else the device string (``cpu``)."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device


def result_record(name: str, ratio: float, device: str, **fields: Any) -> dict[str, Any]:
    """A benchmark result: ``name``, ``ratio`` (the headline ratio), ``device``, ``versions``, the
    machine, and the benchmark's own ``fields`` (settings, raw timings, …)."""
    machine = machine_info()
    return {"name": name, "ratio": ratio, "device": device_name(device), "versions": machine["versions"],
            **fields, "machine": machine}


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


# --- peak memory ------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS:``, ``VmHWM:``)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(run: Callable[[], Any], device: str) -> dict[str, Any]:
    """Run ``run()`` once and report its peak memory: CUDA ``max_memory_allocated`` on a CUDA
    device, else the process's peak RSS (``VmHWM``, reset to the current RSS first where Linux
    allows it, so loading the model does not set the peak). ``growth_bytes`` is the peak over what
    was held before the run. Meant for a fresh process (``json_subprocess``): allocators keep what
    earlier work freed."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        reset = True
    else:
        reset = _reset_peak_rss()
        base = status_kib("VmRSS:") * 1024
    run()
    if cuda:
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = status_kib("VmHWM:") * 1024
    return {"kind": "cuda allocated" if cuda else "cpu rss", "peak_reset_before_run": reset,
            "base_bytes": base, "peak_bytes": peak, "growth_bytes": peak - base}


def json_subprocess(module: str, argv: list[str], python: str | None = None) -> dict[str, Any]:
    """Run ``python -m module *argv`` in a fresh interpreter; the JSON object on its last stdout
    line (``RuntimeError`` with the end of its stderr if it fails)."""
    done = subprocess.run([python or sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          cwd=REPOSITORY)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- time inside a function -------------------------------------------------------------------


class CallTimer:
    """While active, ``owner.attribute`` (a function or method) is wrapped to count its calls and
    the seconds spent inside them (outermost calls only); ``device`` CUDA: synchronised on exit of
    each call, so the seconds are the device's work, not its queueing. ``first_start`` and
    ``last_end`` are the ``time.perf_counter()`` of the first call's start and the last's end."""

    def __init__(self, owner: Any, attribute: str, device: str = "cpu") -> None:
        self.owner, self.attribute, self.device = owner, attribute, device
        self.seconds = 0.0
        self.calls = 0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self._depth = 0
        self._original: Any = None

    def __enter__(self) -> "CallTimer":
        self._original = original = self.owner.__dict__[self.attribute]

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            if self.first_start is None:
                self.first_start = start
            try:
                return original(*args, **kwargs)
            finally:
                synchronize(self.device)
                self.last_end = time.perf_counter()
                self.seconds += self.last_end - start
                self.calls += 1
                self._depth -= 1

        setattr(self.owner, self.attribute, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.owner, self.attribute, self._original)


# --- generation -------------------------------------------------------------------------------


def untraced_generate(pipe: Any, prompts: list[str], seeds: list[int], config: Any) -> Any:
    """The pipeline call ``generate_traced`` makes (same prompts, seeds, size, steps and
    architecture arguments), without the tracer."""
    import torch

    from transforms.attribution.architectures import architecture_of
    from transforms.attribution.generate import image_seed, image_size

    height, width = image_size(pipe, config)
    per_prompt = config.images_per_prompt
    generators = [torch.Generator("cpu").manual_seed(image_seed(int(s), k)) for s in seeds for k in range(per_prompt)]
    return pipe(prompt=list(prompts), height=height, width=width, num_inference_steps=config.steps,
                num_images_per_prompt=per_prompt, generator=generators, output_type="np",
                **architecture_of(pipe).call_kwargs(config, None, pipe))

"""Shared helpers for ratio benchmarks: machine/version facts, timing pairs, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).parent / "results"


def machine_info() -> dict[str, Any]:
    """Machine, accelerator and library versions, recorded with every result."""
    import torch

    from pipeline.summary import library_versions

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
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

"""Paired timings in CPU seconds as well as wall seconds: on a shared machine other processes
stretch wall time by whatever they run, while this process's CPU seconds (every thread of it) stay
close to its own work. Meaningful on CPU with one torch thread (idle OpenMP workers spin and
count); on a GPU, wall seconds are the measure."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from benchmarks.common import paired_times


class CpuSeconds:
    """``fn`` that keeps the CPU seconds of each call."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.seconds: list[float] = []

    def __call__(self) -> Any:
        start = time.process_time()
        try:
            return self.fn()
        finally:
            self.seconds.append(time.process_time() - start)


def paired_cpu_times(a: Callable[[], Any], b: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """``common.paired_times`` of ``a`` and ``b``, plus their CPU seconds and CPU ratios pair by pair
    (warm-up calls left out)."""
    cpu_a, cpu_b = CpuSeconds(a), CpuSeconds(b)
    timing = paired_times(cpu_a, cpu_b, repeats, warmup)
    seconds_a, seconds_b = cpu_a.seconds[warmup:], cpu_b.seconds[warmup:]
    ratios = [x / y for x, y in zip(seconds_a, seconds_b)]
    return {**timing, "a_cpu_seconds": seconds_a, "b_cpu_seconds": seconds_b,
            "a_cpu_median": statistics.median(seconds_a), "b_cpu_median": statistics.median(seconds_b),
            "cpu_ratio_median": statistics.median(ratios), "cpu_ratio_min": min(ratios), "cpu_ratio_max": max(ratios)}


def headline(timing: dict[str, Any], device: str) -> float:
    """The ratio to report: CPU seconds on a CPU device, wall seconds on an accelerator."""
    return timing["cpu_ratio_median"] if device == "cpu" else timing["ratio_median"]

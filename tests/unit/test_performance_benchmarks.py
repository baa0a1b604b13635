"""The docs/performance.md benchmark scripts run end to end at their tiniest settings (results go
to a temporary folder, not benchmarks/results); ``compile_gain`` compiles for minutes and is
covered by tests/unit/test_compile.py instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import encoder_overlap, joint_conditional, load_memory, trace_selection_cost
from benchmarks.cpu_time import paired_cpu_times
from tests.unit.test_benchmarks_smoke import results_folder, written  # noqa: F401  (autouse fixture)


def test_paired_cpu_times_count_this_process_only() -> None:
    timing = paired_cpu_times(lambda: sum(range(200_000)), lambda: sum(range(100_000)), repeats=3)
    assert len(timing["a_cpu_seconds"]) == len(timing["b_cpu_seconds"]) == 3  # the warm-up left out
    assert timing["cpu_ratio_min"] <= timing["cpu_ratio_median"] <= timing["cpu_ratio_max"]
    assert timing["a_cpu_median"] > 0 and timing["a_median"] > 0


def test_joint_conditional(results_folder: Path) -> None:
    joint_conditional.main(["--size", "64", "--heads", "2", "--head-dim", "8", "--text", "5", "--repeats", "1"])
    result = written(results_folder, "joint_conditional")
    assert result["max_abs_difference"] == 0.0


def test_encoder_overlap(one_torch_thread, results_folder: Path) -> None:
    encoder_overlap.main(["--prompts", "4", "--size", "64", "--steps", "1", "--batch-size", "1", "--repeats", "1"])
    result = written(results_folder, "encoder_overlap")
    assert set(result["blocked_seconds_per_row"]) == {"background", "synchronous"}
    assert result["queue_bytes"] > 0
    assert result["ratio"] == pytest.approx(
        result["blocked_seconds_per_row"]["background"] / result["blocked_seconds_per_row"]["synchronous"])


def test_trace_selection_cost(one_torch_thread, results_folder: Path) -> None:
    trace_selection_cost.main(["--model", "tiny", "--size", "64", "--steps", "2", "--repeats", "1"])
    result = written(results_folder, "trace_selection_cost_tiny")
    assert set(result["timings"]) == {"steps_0_1", "layers_down", "untraced"}
    assert result["ratio"] == result["timings"]["steps_0_1"]["cpu_ratio_median"]


@pytest.mark.slow  # two fresh interpreters
def test_load_memory(results_folder: Path) -> None:
    load_memory.main(["--model", "tiny"])
    result = written(results_folder, "load_memory_float32")
    assert set(result["runs"]) == {"low_cpu_mem_usage", "full_init"}
    [with_it], [without] = result["runs"]["low_cpu_mem_usage"], result["runs"]["full_init"]
    assert with_it["weight_bytes"] == without["weight_bytes"] > 0  # the same weights, loaded both ways
    assert result["ratio"] == pytest.approx(with_it["touched_growth_bytes"] / without["touched_growth_bytes"])

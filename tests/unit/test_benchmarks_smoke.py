"""The issue-16 benchmark scripts run end to end at their tiniest settings and write the result
fields the README table is built from (results go to a temporary folder, not benchmarks/results)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from benchmarks import architecture_cost, bytes_per_image, common, daam_reference_throughput, memory_traced, shapes
from benchmarks import gpu_suite, located_overhead, trace_overhead_real
from benchmarks import beam_throughput, concept_cost

COMMON_FIELDS = {"name", "ratio", "device", "versions", "settings", "machine"}


@pytest.fixture(autouse=True)
def results_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS", folder)
    return folder


def written(folder: Path, name: str) -> dict:
    result = json.loads((folder / f"{name}.json").read_text())
    assert COMMON_FIELDS <= set(result), COMMON_FIELDS - set(result)
    assert result["name"] == name and result["device"] == "cpu"
    assert "torch" in result["versions"]
    return result


def test_shapes_follow_the_published_configs() -> None:
    assert shapes.SD15_UNET["cross_attention_dim"] == 768 and shapes.SD21_BASE_UNET["cross_attention_dim"] == 1024
    assert shapes.SD21_BASE_UNET["use_linear_projection"] and "use_linear_projection" not in shapes.SD15_UNET
    assert shapes.SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10)
    pipe = shapes.build("sdxl", tiny=True)
    width = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert width == pipe.unet.config.cross_attention_dim  # SDXL concatenates its two encoders


def test_trace_overhead_real(one_torch_thread, results_folder: Path) -> None:
    trace_overhead_real.main(["--tiny", "--shapes", "sd15,sd21,sdxl", "--batches", "1,2", "--shape-batches", "--size", "64",
                              "--steps", "1", "--repeats", "1", "--warmup", "0", "--located-repeats", "1",
                              "--name", "trace_overhead_smoke"])
    result = written(results_folder, "trace_overhead_smoke")
    assert set(result["ratios"]) == {f"{s}/b{b}" for s in ("sd15", "sd21", "sdxl") for b in (1, 2)}
    assert set(result["located_ratios"]) == set(result["ratios"])
    assert result["ratio"] == max(result["ratios"].values()) > 0
    batch = result["shapes"]["sd21"]["batches"]["2"]
    assert batch["traced_seconds_per_image"] == pytest.approx(batch["timing"]["a_median"] / 2)
    located = batch["located"]
    [pair], [parts] = located["pairs"], located["overheads"]
    assert located["located_ratio"] == pytest.approx(1 + sum(parts.values()) / pair["untraced"]["total"])
    assert 0 < pair["untraced"]["traced_modules"] < pair["untraced"]["denoiser"] < pair["untraced"]["total"]


def test_forward_clock_counts_outermost_calls_and_removes_its_hooks() -> None:
    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return x

    inner = Slow()
    outer = torch.nn.Sequential(inner, Slow())
    with located_overhead.ForwardClock([outer, inner]) as clock:
        outer(torch.zeros(1))
        inner(torch.zeros(1))
    assert clock.calls == 2 and 0.06 <= clock.seconds < 1.0  # outer (two sleeps) once, inner alone once
    assert not inner._forward_hooks and not inner._forward_pre_hooks and not outer._forward_hooks


def test_located_overhead_finds_work_added_outside_the_denoiser(tiny_pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    from transforms.attribution import GenerationConfig, HeatMapStore

    aggregate = HeatMapStore._aggregate
    monkeypatch.setattr(HeatMapStore, "_aggregate", lambda self, select: (time.sleep(0.3), aggregate(self, select))[1])
    config = GenerationConfig(steps=1, height=64, width=64)
    result = located_overhead.located_overhead(tiny_pipe, ["a cat"], [0], config, repeats=1)
    [parts] = result["overheads"]
    assert parts["outside_denoiser_seconds"] >= 0.25  # the slow aggregation, found where it runs
    assert result["traced_modules"] == len([m for m in tiny_pipe.unet.attn_processors if "attn2" in m and "mid" not in m])


@pytest.mark.slow  # four fresh interpreters
def test_memory_traced(one_torch_thread, results_folder: Path) -> None:
    memory_traced.main(["--tiny", "--size", "64", "--steps", "1,2"])
    result = written(results_folder, "memory_traced")
    assert [(r["variant"], r["steps"]) for r in result["runs"]] == [
        ("untraced", 1), ("traced", 1), ("traced", 2), ("untraced", 2)]
    assert all(r["peak_bytes"] >= r["base_bytes"] > 0 for r in result["runs"])
    assert set(result["traced_peak_by_steps"]) == {"1", "2"} and result["steps_peak_ratio"] > 0


def test_daam_reference_throughput_without_the_reference_venv(one_torch_thread, results_folder: Path,
                                                               tmp_path: Path) -> None:
    daam_reference_throughput.main(["--tiny", "--size", "64", "--steps", "1", "--untraced",
                                    "--reference-python", str(tmp_path / "no-venv" / "python")])
    result = written(results_folder, "daam_reference_throughput")
    assert result["ratio"] is None and "no reference venv" in result["reference_error"]
    assert set(result["images_per_second"]) == {"project_batch_1", "project_batch_4", "untraced_batch_1",
                                                "untraced_batch_4"}
    assert all(v > 0 for v in result["images_per_second"].values())
    rates = result["images_per_second"]
    assert result["untraced_batch_gain"] == pytest.approx(rates["untraced_batch_4"] / rates["untraced_batch_1"])


def test_pipeline_efficiency(one_torch_thread, results_folder: Path) -> None:
    beam_throughput.main(["--model", "tiny", "--prompts", "2", "--size", "64", "--steps", "1", "--batch-size", "2",
                          "--shard-size", "2", "--repeats", "1", "--no-processes", "--name", "pipeline_efficiency"])
    result = written(results_folder, "pipeline_efficiency")
    assert result["ratio"] == pytest.approx(result["beam_over_bare_throughput"])
    for side in ("beam", "bare"):
        busy = result["denoiser_busy"][side]
        assert 0 < busy["busy_share_of_wall"] <= busy["busy_share_of_generation"] <= 1
        assert all(r["denoiser_calls"] == 1 for r in busy["runs"])  # 1 step, 1 batch of 2 prompts (CFG in one call)
        warmup, timed = busy["runs"]  # the default warm-up run is kept but not in the shares (it loads the model)
        assert busy["warmup_runs"] == 1
        assert busy["busy_share_of_wall"] == pytest.approx(timed["denoiser_seconds"] / timed["wall_seconds"])


def test_bytes_per_image(one_torch_thread, results_folder: Path) -> None:
    bytes_per_image.main(["--model", "tiny", "--size", "64", "--prompts", "2", "--shard-size", "2"])
    result = written(results_folder, "bytes_per_image")
    small, large = result["variants"]["float16"], result["variants"]["float32"]
    assert small["rows"] == large["rows"] == 2
    assert {"image", "token_maps", "footer"} <= set(small["column_bytes_per_row"])
    assert sum(small["column_bytes_per_row"].values()) == pytest.approx(small["bytes_per_row"])
    assert large["column_bytes_per_row"]["token_maps"] > small["column_bytes_per_row"]["token_maps"]
    assert small["calls"]["encode"] == 2 and small["calls"]["write"] == 1 and result["ratio"] > 0


@pytest.mark.parametrize("arch, calls", [("sdxl", 1), ("flux", 1), ("pixart", 1), ("zimage", 1), ("qwenimage", 1),
                                         ("flux2", 2)])  # klein: CFG as 2 calls
def test_brute_capture_keeps_every_traced_layers_softmax(one_torch_thread, arch: str, calls: int) -> None:
    """The comparison capture changes no pixel and keeps each traced module's full probabilities."""
    args = architecture_cost.parse_args(["--arch", arch, "--tiny", "--size", "64", "--steps", "2"])
    pipe = architecture_cost.build_pipeline(arch, args)
    prompts, seeds, config = [architecture_cost.PROMPT], [0], architecture_cost.generation_config(args)
    plain = common.untraced_generate(pipe, prompts, seeds, config).images
    names = architecture_cost.traced_names(pipe, args)
    denoiser = architecture_cost.architecture_of(pipe).denoiser(pipe)
    with architecture_cost.FullMatrixCapture(denoiser, names) as capture:
        brute = common.untraced_generate(pipe, prompts, seeds, config).images
    assert abs(brute - plain).max() < 1e-4
    assert sorted(capture.sums) == sorted(n.removesuffix(".processor") for n in names)
    for probs in capture.sums.values():  # every row is a softmax over all keys, summed over 2 steps' calls
        assert probs.ndim == 4 and torch.allclose(probs.sum(-1), torch.full(probs.shape[:-1], 2.0 * calls), atol=1e-4)
    assert capture.copied_bytes == 2 * calls * sum(t.numel() * t.element_size() for t in capture.sums.values())


@pytest.mark.slow  # three fresh interpreters
def test_architecture_cost(one_torch_thread, results_folder: Path) -> None:
    architecture_cost.main(["--arch", "sd3", "--tiny", "--size", "64", "--steps", "1", "--repeats", "1",
                            "--warmup", "0", "--layers", "sd3=1", "--located-repeats", "1"])
    result = written(results_folder, "architecture_cost_sd3")
    assert result["located"]["traced_modules"] == 1 and result["located_ratio"] == result["located"]["located_ratios"][0]
    assert result["ratio"] == result["timing"]["traced"]["ratio_median"] > 0
    assert result["denoiser"]["config"]["num_layers"] == 1 and result["denoiser"]["reduced"]
    assert [result["memory"][v]["variant"] for v in ("untraced", "traced", "brute")] == ["untraced", "traced", "brute"]
    assert result["brute_copied_bytes"] == result["brute_kept_bytes"] > 0  # one step: copied once, kept once
    assert result["denoiser"]["traced_layers"] == 1 and result["brute_ratio_peak_memory"] > 0


@pytest.mark.slow  # two fresh interpreters
def test_concept_cost(one_torch_thread, results_folder: Path) -> None:
    concept_cost.main(["--arch", "flux", "--tiny", "--size", "64", "--steps", "1", "--repeats", "1", "--warmup", "0",
                       "--concepts", "3"])
    result = written(results_folder, "concept_cost_flux")
    assert result["ratio"] == result["timing"]["ratio_median"] > 0
    assert [result["memory"][v]["variant"] for v in ("traced", "concepts")] == ["traced", "concepts"]
    assert result["settings"]["concepts"] == ["cat", "sofa", "dog"]
    assert result["parameters"]["full_depth"] > result["parameters"]["measured"] > 0  # the tiny has fewer blocks
    assert result["projected_full_depth"]["time"] > 0 and result["projected_full_depth"]["peak_memory"] > 0


def test_gpu_suite_runs_its_steps_into_its_folder_and_records_a_failed_one(
    one_torch_thread, results_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(argv: list[str]) -> None:
        raise RuntimeError("no CUDA here")

    monkeypatch.setitem(gpu_suite.STEPS, "memory", (broken, [], []))
    folder = results_folder / "gpu"
    result = gpu_suite.main(["--smoke", "--only", "trace_overhead,memory", "--results", str(folder)])
    assert result["steps"]["memory"] == {"status": "failed", "seconds": pytest.approx(0, abs=1),
                                         "error": "RuntimeError: no CUDA here"}
    assert result["steps"]["trace_overhead"]["status"] == "ok" and result["ratio"] == 0.5
    written_files = sorted(p.name for p in folder.iterdir())
    assert written_files == ["gpu_suite.json", "trace_overhead_gpu.json"]
    assert result["steps"]["trace_overhead"]["ratio"] == json.loads((folder / "trace_overhead_gpu.json").read_text())["ratio"]

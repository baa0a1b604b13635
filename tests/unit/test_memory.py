"""The memory estimate of one traced generation (``transforms.models.memory``): its parts against the tiny
model's real modules, an upper bound of measured peak RSS, and a refusal that allocates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from transforms.models import memory
from transforms.attribution import GenerationConfig, TraceConfig
from transforms.models.memory import MemoryBudgetError, estimate_generation, model_configs, require_fits, traced_layers
from transforms.models.tiny_sd import tiny_model_path

GIB = 2**30
SD15 = {  # Stable Diffusion 1.5's UNet and VAE configs (the parts the estimate reads)
    "unet": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": 8,
             "cross_attention_dim": 768, "in_channels": 4,
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3},
    "vae": {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4},
}
MEASURE = textwrap.dedent("""
    import json, sys
    from transforms.attribution import GenerationConfig
    from transforms.attribution.generate import generate_traced
    from transforms.models.loading import ModelSpec, load_pipeline

    def kib(field):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))

    pipe = load_pipeline(ModelSpec("tiny", device="cpu"))
    generate_traced(pipe, ["a cat"], [0], GenerationConfig(steps=1, height=64, width=64))  # first-call set-up
    for size, batch in json.loads(sys.argv[1]):
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        base = kib("VmRSS:")
        generate_traced(pipe, ["a photo of a cat"] * batch, list(range(batch)), GenerationConfig(steps=1, height=size, width=size))
        print(json.dumps([size, batch, (kib("VmHWM:") - base) * 1024]), flush=True)
""")


@pytest.fixture(scope="module")
def configs() -> dict:
    return model_configs(str(tiny_model_path()))


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_growth(run) -> int:
    """Bytes the peak RSS of this process grows by while ``run()`` runs."""
    def kib(field: str) -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

    Path("/proc/self/clear_refs").write_text("5")
    base = kib("VmRSS:")
    run()
    return (kib("VmHWM:") - base) * 1024


def test_traced_layers_match_the_tiny_unet(tiny_pipe, configs):
    modules = [name for name, _ in tiny_pipe.unet.named_modules() if name.endswith("attn2")]
    levels = len(configs["unet"]["block_out_channels"])

    def factor(name: str) -> int:
        kind, _, rest = name.partition(".")
        if kind == "mid_block":
            return 2 ** (levels - 1)
        index = int(rest.split(".")[0])
        return 2 ** (index if kind == "down_blocks" else levels - 1 - index)

    found = sorted(t.factor for t in traced_layers(configs["unet"], TraceConfig(layers="all")))
    assert found == sorted(factor(m) for m in modules)
    reference = sorted(t.factor for t in traced_layers(configs["unet"], TraceConfig()))
    assert reference == sorted(factor(m) for m in modules if not m.startswith("mid_block"))
    assert not traced_layers(configs["unet"], TraceConfig(factors=(8,)))  # reference drops factor 8
    assert len(traced_layers(SD15["unet"], TraceConfig(layers="all"))) == 16  # SD 1.x's 16 cross-attention layers


def test_weights_are_the_parameters_in_the_dtype(tiny_pipe, configs):
    parameters = sum(p.numel() for m in (tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder) for p in m.parameters())
    assert memory.weight_bytes(configs, "float32") == 4 * parameters
    assert memory.weight_bytes(configs, "float16") == 2 * parameters


def test_self_attention_counted_only_when_materialised(configs):
    generation = GenerationConfig()
    assert not memory.attention_materialises("cpu", "float32", 2, 16)  # torch's CPU flash kernel
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        assert memory.attention_materialises("cpu", "float32", 2, 16)
    flat = estimate_generation(configs, generation, (512, 512), 1, materialises=False)
    full = estimate_generation(configs, generation, (512, 512), 1, materialises=True)
    assert flat.parts["self-attention"] == 0
    # B·2 (CFG) · heads · (h·w)² scores and softmax, float32, at the 64×64 latent grid with 2 heads
    assert full.parts["self-attention"] == 1 * 2 * 2 * 4096**2 * 2 * 4
    assert full.total > flat.total


def test_estimate_grows_with_size_batch_and_shard(configs):
    def scaling(size: int, images: int) -> int:  # what grows with the size (not the fixed workspace)
        found = estimate_generation(configs, GenerationConfig(), (size, size), images)
        return found.generation - found.parts["kernel workspace"]

    assert scaling(512, 1) > 3 * scaling(256, 1) and scaling(256, 4) > 3 * scaling(256, 1)
    base = estimate_generation(configs, GenerationConfig(), (256, 256), 1)
    plain = estimate_generation(configs, GenerationConfig(guidance_scale=1), (256, 256), 1)  # no CFG: half the UNet batch
    assert 2 * plain.parts["UNet activations"] == base.parts["UNet activations"]
    assert estimate_generation(configs, GenerationConfig(), (256, 256), 1, rows_per_shard=256).parts["shard rows"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not _clear_refs_works(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_estimate_is_an_upper_bound_of_measured_peak(configs):
    """A real traced generation on the tiny model, in a fresh process (large allocations mapped, so
    RSS follows live memory): measured growth <= estimate <= 20x measured."""
    cases = [(384, 2), (512, 2)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cases)], env=env, capture_output=True,
                          text=True, timeout=600, check=True)
    measured = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(s, b) for s, b, _ in measured] == cases
    for size, batch, grown in measured:
        estimate = estimate_generation(configs, GenerationConfig(steps=1), (size, size), batch).generation
        assert grown > 16 * 2**20, (size, batch, grown)  # a measurable generation
        assert grown <= estimate <= 20 * grown, (size, batch, grown, estimate, estimate / grown)


@pytest.mark.skipif(not _clear_refs_works(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_absurd_size_is_refused_fast_without_allocating(configs, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 21 * GIB)
    errors: list[MemoryBudgetError] = []

    def refuse() -> None:
        estimate = estimate_generation(configs, GenerationConfig(), (65536, 65536), 4)
        with pytest.raises(MemoryBudgetError) as caught:
            require_fits(estimate, "cpu", "--height 65536 --width 65536 --batch-size 4")
        errors.append(caught.value)

    started = time.perf_counter()
    grown = _peak_growth(refuse)
    assert time.perf_counter() - started < 1.0
    assert grown < 64 * 2**20
    message = str(errors[0])
    assert message.startswith("--height 65536 --width 65536 --batch-size 4: one generation of 4 images needs about ")
    assert message.endswith("but this cpu has 21 GiB available; lower --height/--width or --batch-size")
    assert "TiB (VAE decode" in message and "\n" not in message


def test_what_fits_passes_and_sd_at_512_needs_gigabytes(configs, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 8 * GIB)
    require_fits(estimate_generation(configs, GenerationConfig(), (512, 512), 4), "cpu", "--height 512")
    sd = estimate_generation(SD15, GenerationConfig(), (512, 512), 4, materialises=False)
    assert 3.4 * GIB < sd.parts["weights"] < 3.6 * GIB  # UNet 860M + VAE 84M parameters, float32
    assert 8 * GIB < sd.total < 20 * GIB  # 4 images decoded at once dominate
    with pytest.raises(MemoryBudgetError, match=r"one generation of 4 images needs about .* but this cuda has 8 GiB available"):
        require_fits(sd, "cuda", "--height 512 --width 512 --batch-size 4")
    monkeypatch.setattr(memory, "available_memory", lambda device: None)  # unknown device: not checked
    require_fits(sd, "mps", "--height 512")


def test_available_memory():
    cpu = memory.available_memory("cpu")
    total = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    assert cpu is not None and 0 < cpu <= total
    assert memory.available_memory("no-such-device") is None
    if not torch.cuda.is_available():
        assert memory.available_memory("cuda") is None


def test_geometry_refusals(configs):
    memory.check_geometry(configs, (520, 64), TraceConfig())  # multiples of the tiny VAE's 8
    deep = {**configs, "vae": {**configs["vae"], "block_out_channels": [8, 8, 16, 16, 16]}}
    with pytest.raises(ValueError, match=r"^--height 520: must be a multiple of 16 for this model"):
        memory.check_geometry(deep, (520, 512), TraceConfig())
    with pytest.raises(ValueError, match=r"^--layers reference --factors 8: traces no cross-attention layer"):
        memory.check_geometry(configs, (512, 512), TraceConfig(factors=(8,)))
    memory.check_geometry(configs, (512, 512), TraceConfig(layers="all", factors=(8,)))


def test_format_bytes():
    assert [memory.format_bytes(n) for n in (0, 1023, 1024, 1536 * 2**20, 1.2 * 2**40, 2**70)] == [
        "0 B", "1023 B", "1 KiB", "1.5 GiB", "1.2 TiB", "1.02e+03 EiB"]


def test_refinement_adds_the_affinity_and_checks_its_factor(configs):
    from transforms.attribution import SegmentationConfig
    from transforms.attribution.classes import load_vocabulary

    voc = load_vocabulary("voc")
    plain = estimate_generation(SD15, GenerationConfig(), (512, 512), 2, materialises=False)
    refined = estimate_generation(SD15, GenerationConfig(), (512, 512), 2, materialises=False,
                                  segmentation=SegmentationConfig(voc))
    assert refined.parts["self-attention affinity"] == 2 * 2 * 1024**2 * 4  # sum and mean, 32x32 grid, 2 images
    assert refined.parts["affinity probe"] == 2 * 8 * 2 * 1024**2 * 4  # scores and softmax, 8 heads at once
    assert plain.total < refined.total < 1.1 * plain.total
    unrefined = SegmentationConfig(voc, refine=False)
    assert estimate_generation(SD15, GenerationConfig(), (512, 512), 2, materialises=False,
                               segmentation=unrefined).total == plain.total
    memory.check_geometry(configs, (64, 64), TraceConfig(), SegmentationConfig(voc, refine_factor=8))
    memory.check_geometry(configs, (64, 64), TraceConfig(), SegmentationConfig(voc, refine=False, refine_factor=16))
    with pytest.raises(ValueError, match=r"^refine factor 16: this model has no self-attention there \(it has "
                                         r"self-attention at factors 1, 2, 4, 8\)$"):
        memory.require_generation_fits(configs, GenerationConfig(), (64, 64), batch_size=1, prompts=1,
                                       shard_prompts=1, dtype="float32", device="cpu",
                                       segmentation=SegmentationConfig(voc, refine_factor=16))

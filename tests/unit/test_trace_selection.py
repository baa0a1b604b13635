"""Trace selection (issue 15, item 5): ``--step-range`` fractions, ``--layers`` kinds and globs,
``--heads max``, ``--per-timestep`` bins, their one-line refusals and the fingerprint of runs that
leave them alone. Outputs of the flags are checked in tests/integration/test_trace_selection_run.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import build_parser
from pipeline.options import RunSettings
from transforms.models import memory
from transforms.attribution import CrossAttentionTracer, GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.steps import resolve_fractions, step_bins
from transforms.attribution.store import infer_factor
from transforms.models.tiny_sd import tiny_model_path
from transforms.trace_selection import check_selection, resolve_selection, text_modules

SIZE = dict(height=64, width=64)
UP1 = ["up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
       "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor"]
MID = ["mid_block.attentions.0.transformer_blocks.0.attn2.processor"]


@pytest.fixture(autouse=True, scope="module")
def _threads(one_torch_thread):
    yield


# --- fractions and bins -------------------------------------------------------------------------

@pytest.mark.parametrize("start, stop, steps, expected", [
    (0.0, 1.0, 20, (0, 20)), (0.2, 0.8, 20, (4, 16)), (0.0, 0.5, 7, (0, 4)),  # 3.5 rounds up
    (0.35, 1.0, 20, (7, 20)),  # 7.5 -> 7: the text 0.35, not the float below it, is rounded
    (0.025, 0.05, 20, (1, 1)),  # 0.5 and 1.0: both round to boundary 1 (an empty range)
])
def test_fractions_round_to_the_nearest_step_boundary(start, stop, steps, expected):
    assert resolve_fractions(start, stop, steps) == expected


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(1, 1000), data=st.data())
def test_fractions_of_whole_steps_resolve_back_to_those_steps(steps, data):
    start = data.draw(st.integers(0, steps - 1))
    stop = data.draw(st.integers(start + 1, steps))
    assert resolve_fractions(start / steps, stop / steps, steps) == (start, stop)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 50), length=st.integers(1, 60), data=st.data())
def test_time_bins_are_contiguous_and_balanced(start, length, data):
    bins = data.draw(st.integers(1, length))
    got = step_bins(start, start + length, bins)
    sizes = [b - a for a, b in got]
    assert len(got) == bins and got[0][0] == start and got[-1][1] == start + length
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True) and min(sizes) >= 1


def test_more_bins_than_steps_is_refused():
    with pytest.raises(ValueError, match="cannot split 3 traced steps into 4 time bins"):
        step_bins(2, 5, 4)
    with pytest.raises(ValueError, match="cannot split 2 traced steps"):
        GenerationConfig(steps=4, trace=TraceConfig(step_range=(2, None), per_timestep=3))


def test_generation_config_resolves_fractions():
    config = GenerationConfig(steps=20, trace=TraceConfig(step_fractions=(0.2, 0.8), per_timestep=3))
    assert config.trace.step_range == (4, 16)
    assert config.trace.step_bins(20) == [(4, 8), (8, 12), (12, 16)]
    assert [s for s in range(20) if config.trace.keeps_step(s)] == list(range(4, 16))


# --- the command line ---------------------------------------------------------------------------

def _args(*extra: str):
    return build_parser().parse_known_args(["run", "--prompts", "p.txt", "--output", "out", *extra])[0]


@pytest.mark.parametrize("flags, line", [
    (["--step-range", "0.8:0.2"], "argument --step-range: expected START:STOP, step indices"),
    (["--step-range", "5:0.5"], "argument --step-range: expected START:STOP"),
    (["--step-range", "1.0:"], "argument --step-range: expected START:STOP"),
    (["--step-range", "0.5:nan"], "argument --step-range: expected START:STOP"),
    (["--steps", "4", "--step-range", "0.5:0.6"], "--step-range 0.5:0.6 selects no step of --steps 4"),
    (["--per-timestep", "0"], "argument --per-timestep: expected an integer in [1, 1000], got '0'"),
    (["--per-timestep", "2.5"], "argument --per-timestep: expected an integer in [1, 1000], got '2.5'"),
    (["--steps", "10", "--step-range", "0.5:", "--per-timestep", "6"], "--per-timestep 6: only 5 steps are traced (steps 5..9 of --steps 10)"),
    (["--heads", "median"], "argument --heads: invalid choice: 'median'"),
    (["--joint-normalize", "image"], "argument --joint-normalize: invalid choice: 'image'"),
    (["--layers", "up,,mid"], "argument --layers: '' is not a layer selector"),
    (["--layers", "up blocks"], "argument --layers: 'up blocks' is not a layer selector"),
    (["--layers", "all,up"], "argument --layers: 'all' is not a layer selector"),
    (["--layers="], "argument --layers: '' is not a layer selector"),
])
def test_bad_selection_flags_end_in_one_line(flags, line, run_cli, tmp_path):
    code, out, err = run_cli("run", "--prompts", tmp_path / "missing.txt", "--output", tmp_path / "out", *flags)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert line in err, err
    assert not (tmp_path / "out").exists()


def test_selection_flags_fill_the_trace_config():
    trace = RunSettings.from_args(_args("--steps", "20", "--step-range", ":0.5", "--layers", "up,mid_block.*",
                                        "--heads", "max", "--joint-normalize", "text", "--per-timestep", "2")).generation.trace
    assert (trace.step_fractions, trace.step_range, trace.per_timestep) == ((0.0, 0.5), (0, 10), 2)
    assert (trace.layers, trace.heads, trace.joint_normalize) == ("up,mid_block.*", "max", "text")
    again = RunSettings.from_dict(RunSettings.from_args(_args("--step-range", "0.2:0.8", "--per-timestep", "3")).to_dict())
    assert again.generation.trace.step_fractions == (0.2, 0.8) and again.generation.trace.step_range == (4, 16)


# Fingerprints computed on the code before these options (and the heads/joint_normalize fields)
# existed, commit 5eebcaa: outputs written then resume under today's code (with --no-overlay: the
# overlay column, on by default since schema 1.3, is what those outputs lack).
OLD_FINGERPRINTS = [
    (["--no-overlay"], "4e73f27ce0fac3bd"),
    (["--no-overlay", "--layers", "all", "--factors", "1,2", "--step-range", "0:10", "--steps", "30"], "ad31e98f84634d5c"),
    (["--no-overlay", "--step-range", "5:", "--map-dtype", "float32", "--model", "tiny", "--guidance-scale", "3"], "212c4d57aa5faa58"),
]


@pytest.mark.parametrize("flags, fingerprint", OLD_FINGERPRINTS)
def test_defaults_keep_the_fingerprint_of_earlier_outputs(flags, fingerprint):
    assert RunSettings.from_args(_args(*flags)).output_fingerprint("corpus-digest") == fingerprint
    explicit = ["--heads", "mean", "--joint-normalize", "all", *flags]
    assert RunSettings.from_args(_args(*explicit)).output_fingerprint("corpus-digest") == fingerprint


@pytest.mark.parametrize("flags", [["--heads", "max"], ["--joint-normalize", "text"], ["--per-timestep", "2"],
                                   ["--step-range", "0.0:0.5"], ["--layers", "up"]])
def test_new_selections_change_the_fingerprint(flags):
    assert RunSettings.from_args(_args("--no-overlay", *flags)).output_fingerprint("corpus-digest") != OLD_FINGERPRINTS[0][1]


# --- layers by kind and by name ------------------------------------------------------------------

@pytest.mark.parametrize("layers, expected", [
    ("mid", MID),
    ("up_blocks.1.*", UP1),
    ("mid,up_blocks.1.attentions.0.transformer_blocks.0.attn2", MID + UP1[:1]),  # a module name, no .processor
    ("down", [f"down_blocks.{i}.attentions.0.transformer_blocks.0.attn2.processor" for i in range(3)]),
])
def test_layers_by_kind_and_glob_on_the_tiny_model(tiny_pipe, layers, expected):
    trace = TraceConfig(layers=layers)
    assert CrossAttentionTracer(tiny_pipe.unet, HeatMapStore(trace)).traced_names == sorted(expected)
    # the same modules from the UNet built on the meta device (the driver's check and run.json)
    record = resolve_selection(str(tiny_model_path()), None, GenerationConfig(steps=2, trace=trace))
    assert record["traced"] == sorted(expected)
    assert len(memory.traced_layers(memory.model_configs(str(tiny_model_path()))["unet"], trace)) == len(expected)


def test_only_the_selected_layers_record(tiny_pipe):
    store = HeatMapStore(TraceConfig(layers="up_blocks.1.*,mid"))
    with CrossAttentionTracer(tiny_pipe.unet, store):
        store.begin(num_images=1, cfg=True, latent_size=(8, 8))
        tiny_pipe("a cat", num_inference_steps=1, **SIZE, output_type="np",
                  callback_on_step_end=lambda pipe, step, timestep, tensors: (store.next_step(), tensors)[1])
    assert sorted(store.layer_names()) == sorted(MID + UP1)
    assert store.factors[MID[0]] == 8  # --layers names keep every factor (reference drops 8)


def test_selection_that_matches_nothing_is_refused(tiny_pipe):
    architecture = architecture_of(tiny_pipe)
    modules = text_modules(tiny_pipe.unet, architecture)
    with pytest.raises(ValueError, match=r"^--layers up,single: 'single' matches no text-attention module of this model \(10 modules of kinds down, mid, up"):
        check_selection(modules, TraceConfig(layers="up,single"))
    with pytest.raises(ValueError, match=r"^--layers up --factors 8: traces no cross-attention layer .* --layers up selects are at factors 1, 2, 4\)$"):
        check_selection(modules, TraceConfig(layers="up", factors=(8,)))
    assert [m.name for m in check_selection(modules, TraceConfig(layers="mid", factors=(8,)))] == MID


def test_unmatched_layers_are_refused_before_anything_is_written(run_cli, write_corpus, tmp_path):
    code, out, err = run_cli("run", "--prompts", write_corpus(["a cat"]), "--output", tmp_path / "out",
                             "--steps", "2", "--height", "64", "--width", "64", "--layers", "up_blocks.9.*")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --layers up_blocks.9.*: 'up_blocks.9.*' matches no text-attention module"), err
    assert not (tmp_path / "out").exists()


# --- heads --------------------------------------------------------------------------------------

def test_heads_max_equals_a_brute_force_max(tiny_pipe, monkeypatch):
    """Record every traced call's per-head probabilities of a mean run; the max run's maps must be
    the sum over steps of the per-call maximum over heads, upsampled, clamped, averaged over layers."""
    calls: list[tuple[str, torch.Tensor, int]] = []
    original = HeatMapStore.add

    def recording(self, name, probs, heads):
        calls.append((name, probs.clone(), heads))
        original(self, name, probs, heads)

    monkeypatch.setattr(HeatMapStore, "add", recording)
    config = dict(steps=2, **SIZE)
    [mean] = generate_traced(tiny_pipe, ["a red cat on a mat"], [3], GenerationConfig(**config))
    monkeypatch.setattr(HeatMapStore, "add", original)
    [peak] = generate_traced(tiny_pipe, ["a red cat on a mat"], [3], GenerationConfig(**config, trace=TraceConfig(heads="max")))

    sums: dict[str, torch.Tensor] = {}
    for name, probs, heads in calls:
        conditional = probs[probs.shape[0] // 2 :].unflatten(0, (1, heads))  # CFG: [uncond; cond]
        sums[name] = sums.get(name, 0) + conditional.amax(1)  # (1, queries, keys)
    total = 0
    for maps in sums.values():
        _, h, w = infer_factor(maps.shape[1], 8, 8)
        grid = maps.permute(0, 2, 1).reshape(1, -1, h, w)
        total = total + F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False).clamp(min=0)
    brute = (total / len(sums))[0, : peak.heat_map.maps.shape[0]]
    torch.testing.assert_close(peak.heat_map.maps, brute, rtol=0, atol=1e-5)
    assert (peak.heat_map.maps - mean.heat_map.maps).abs().max() > 1e-3  # max is not mean


# --- per-timestep bins --------------------------------------------------------------------------

def test_store_adds_each_step_into_its_bin():
    store = HeatMapStore(TraceConfig(per_timestep=2))
    with pytest.raises(ValueError, match="need the number of steps"):
        store.begin(num_images=1, cfg=False, latent_size=(1, 2))
    store.begin(num_images=1, cfg=False, latent_size=(1, 2), steps=3)
    for value in (1.0, 2.0, 4.0):  # steps 0, 1 -> bin 0; step 2 -> bin 1
        store.add("layer", torch.full((1, 2, 3), value), heads=1)
        store.next_step()
    assert store.sums["layer"].shape == (2, 1, 1, 2, 3)
    assert store.sums["layer"][:, 0, 0, 0, 0].tolist() == [3.0, 4.0]
    torch.testing.assert_close(store.timestep_maps().sum(0), store.global_maps())
    assert store.global_maps()[0, 0].tolist() == [[7.0, 7.0]]


def test_per_timestep_bins(tiny_pipe):
    prompt, seed, base = ["a dog and a ball"], [7], dict(steps=6, **SIZE)
    [plain] = generate_traced(tiny_pipe, prompt, seed, GenerationConfig(**base))
    [binned] = generate_traced(tiny_pipe, prompt, seed, GenerationConfig(**base, trace=TraceConfig(per_timestep=3)))
    tokens = binned.heat_map.token_maps
    assert plain.timestep_maps is None
    assert binned.timestep_maps.shape == (3, *tokens.shape)
    torch.testing.assert_close(binned.heat_map.maps, plain.heat_map.maps, rtol=0, atol=1e-6)  # global unchanged
    # bin 1 (steps 2, 3) is the map of a run tracing those steps only
    [middle] = generate_traced(tiny_pipe, prompt, seed, GenerationConfig(**base, trace=TraceConfig(step_range=(2, 4))))
    torch.testing.assert_close(binned.timestep_maps[1], middle.heat_map.token_maps, rtol=0, atol=1e-5)
    # the bins add up to the global map: exactly where no layer is upsampled (factor 1), and from
    # above elsewhere (bicubic undershoot clamped per bin)
    assert (binned.timestep_maps.sum(0) >= tokens - 1e-6).all()
    fine = GenerationConfig(**base, trace=TraceConfig(factors=(1,), per_timestep=3))
    [exact] = generate_traced(tiny_pipe, prompt, seed, fine)
    torch.testing.assert_close(exact.timestep_maps.sum(0), exact.heat_map.token_maps, rtol=1e-5, atol=1e-6)
    # each image keeps its own bins inside a batch
    pair = generate_traced(tiny_pipe, ["a red bicycle", *prompt], [5, *seed], fine)
    torch.testing.assert_close(pair[1].timestep_maps, exact.timestep_maps, rtol=0, atol=1e-5)


def test_memory_counts_the_time_bins():
    configs = memory.model_configs(str(tiny_model_path()))
    plain = memory.estimate_generation(configs, GenerationConfig(steps=8), (64, 64), images=2, materialises=False)
    binned = memory.estimate_generation(configs, GenerationConfig(steps=8, trace=TraceConfig(per_timestep=4)), (64, 64),
                                        images=2, materialises=False)
    store = sum(t.heads * (8 // t.factor) ** 2 for t in memory.traced_layers(configs["unet"], TraceConfig()))  # 8x8 latent
    extra = binned.parts["accumulated maps"] - plain.parts["accumulated maps"]
    assert extra == 2 * memory.TEXT_TOKENS * 4 * (3 * store + 4 * 64)


# --- the other architectures --------------------------------------------------------------------

@pytest.mark.parametrize("model, layers, kinds", [
    ("tiny-sdxl", "mid,up_blocks.0.*", {"mid", "up"}),
    ("tiny-sd3", "joint", {"joint"}),
    ("tiny-flux", "single", {"single"}),
])
def test_selection_and_bins_on_every_architecture(model, layers, kinds):
    """The live tracer and the meta-device record pick the same modules; per-timestep bins keep
    the global map and, on a patch grid (no upsampling), add up to it exactly."""
    from transforms.models.builtin import builtin_model_path
    from transforms.models.loading import ModelSpec, load_pipeline

    pipe = load_pipeline(ModelSpec(model, device="cpu"))
    architecture = architecture_of(pipe)
    trace = TraceConfig(layers=layers, heads="max")
    binned = TraceConfig(layers=layers, heads="max", per_timestep=2)
    live = CrossAttentionTracer(architecture.denoiser(pipe), HeatMapStore(trace), architecture=architecture).traced_names
    record = resolve_selection(str(builtin_model_path(model)), None, GenerationConfig(steps=2, trace=binned))
    assert record["traced"] == live and set(record["modules"]) == kinds and record["timestep_bins"] == [[0, 1], [1, 2]]
    [plain] = generate_traced(pipe, ["a cat on a mat"], [1], GenerationConfig(steps=2, **SIZE, trace=trace))
    [split] = generate_traced(pipe, ["a cat on a mat"], [1], GenerationConfig(steps=2, **SIZE, trace=binned))
    torch.testing.assert_close(split.heat_map.maps, plain.heat_map.maps, rtol=0, atol=1e-6)
    assert split.timestep_maps.shape == (2, *split.heat_map.token_maps.shape)
    total = split.timestep_maps.sum(0)
    if record["architecture"] == "unet":
        assert (total >= split.heat_map.token_maps - 1e-6).all()
    else:
        torch.testing.assert_close(total, split.heat_map.token_maps, rtol=1e-5, atol=1e-6)

"""Attribution core on the tiny model: processor equivalence, batching, CFG, sizes, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from transforms.attribution import (
    CrossAttentionTracer,
    DaamCrossAttnProcessor,
    GenerationConfig,
    HeatMapStore,
    TraceConfig,
    generate_traced,
)
from transforms.attribution.store import infer_factor

SMALL = dict(steps=2, height=64, width=64)


def test_processor_output_equals_default_processor():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    hidden = torch.randn(3, 12, 16)
    context = torch.randn(3, 5, 8)
    expected = AttnProcessor()(attn, hidden, context)
    store = HeatMapStore()
    store.begin(num_images=3, cfg=False, latent_size=(3, 4))
    got = DaamCrossAttnProcessor(store, "layer", AttnProcessor())(attn, hidden, context)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    recorded = store.sums["layer"]
    assert recorded.shape == (3, 2, 12, 5)  # (images, heads, h*w, keys)
    # probabilities over the 5 keys sum to one at every pixel, head and image
    torch.testing.assert_close(recorded.sum(-1), torch.ones(3, 2, 12))


def test_store_keeps_only_conditional_half_with_cfg():
    store = HeatMapStore()
    store.begin(num_images=2, cfg=True, latent_size=(2, 2))
    probs = torch.zeros(2 * 2 * 3, 4, 5)  # (2B * heads, hw, keys), heads=3
    probs[: 2 * 3] = 1.0  # unconditional half
    probs[2 * 3 :, :, 1] = 0.5  # conditional half
    store.add("x", probs, heads=3)
    assert torch.all(store.sums["x"][..., 1] == 0.5)
    assert torch.all(store.sums["x"][..., 0] == 0.0)


def _fill(store: HeatMapStore, steps: int = 2) -> None:
    """Random calls at three factors of a 4x6 latent (bicubic upsampling at two of them), through
    ``add`` (per head, CFG) and ``add_reduced`` (heads summed)."""
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        for name, (h, w) in {"fine": (4, 6), "mid": (2, 3), "coarse": (1, 2)}.items():
            store.add(name, torch.rand(2 * 2 * 3, h * w, 9, generator=generator).softmax(-1), heads=3)
            store.add_reduced(f"{name}-joint", torch.rand(4, h * w, 9, generator=generator), 3)
        store.next_step()


@pytest.mark.parametrize("bins", [None, 2])
def test_store_kept_keys_equal_full_store_rows(bins):
    full, kept = HeatMapStore(TraceConfig(per_timestep=bins)), HeatMapStore(TraceConfig(per_timestep=bins))
    full.begin(2, cfg=True, latent_size=(4, 6), steps=2)
    kept.begin(2, cfg=True, latent_size=(4, 6), steps=2, keys=slice(2, 6))
    _fill(full)
    _fill(kept)
    assert kept.sums["fine"].shape[-1] == 4 and full.sums["fine"].shape[-1] == 9
    assert torch.equal(kept.global_maps(), full.global_maps()[:, 2:6])
    if bins:
        assert torch.equal(kept.timestep_maps(), full.timestep_maps()[:, :, 2:6])


def test_infer_factor_handles_odd_latent_sizes():
    assert infer_factor(8 * 12, 8, 12) == (1, 8, 12)
    assert infer_factor(4 * 6, 8, 12) == (2, 4, 6)
    assert infer_factor(3 * 2, 9, 5) == (4, 3, 2)  # ceil division like strided convs
    with pytest.raises(ValueError, match="cannot place 7 attention queries"):
        infer_factor(7, 8, 12)


def test_tracer_restores_original_processors(tiny_pipe):
    before = {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()}
    store = HeatMapStore()
    with CrossAttentionTracer(tiny_pipe.unet, store) as tracer:
        during = tiny_pipe.unet.attn_processors
        traced = [k for k, v in during.items() if isinstance(v, DaamCrossAttnProcessor)]
        assert traced == tracer.traced_names
        assert all("attn2" in k and not k.startswith("mid_block") for k in traced)
        assert not any(isinstance(v, DaamCrossAttnProcessor) for k, v in during.items() if "attn1" in k)
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == before


def test_batch_equals_single_runs(tiny_pipe):
    prompts = ["a photo of a cat", "a dog and a dog", "armadillo", "hello, world!"]
    seeds = [11, 22, 33, 44]
    config = GenerationConfig(steps=2, height=64, width=96)
    batch = generate_traced(tiny_pipe, prompts, seeds, config)
    for i, prompt in enumerate(prompts):
        [single] = generate_traced(tiny_pipe, [prompt], [seeds[i]], config)
        assert single.seed == batch[i].seed == seeds[i]
        np.testing.assert_allclose(single.image, batch[i].image, rtol=0, atol=1e-5)
        torch.testing.assert_close(single.heat_map.maps, batch[i].heat_map.maps, rtol=0, atol=1e-5)
    # different prompts really give different maps
    assert not torch.allclose(batch[0].heat_map.maps[1], batch[0].heat_map.maps[2])


def test_maps_shape_nonsquare_and_values(tiny_pipe):
    [s] = generate_traced(tiny_pipe, ["a cat on a red sofa"], [0], GenerationConfig(steps=2, height=64, width=128))
    assert s.image.shape == (64, 128, 3)
    assert s.heat_map.maps.shape == (len(s.heat_map.prompt.tokens) + 2, 8, 16)
    assert torch.isfinite(s.heat_map.maps).all() and (s.heat_map.maps >= 0).all()
    assert s.heat_map.word_mask("sofa", (64, 128)).shape == (64, 128)


def test_without_guidance_whole_batch_is_conditional(tiny_pipe):
    config = GenerationConfig(steps=2, height=64, width=64, guidance_scale=1.0)
    pair = generate_traced(tiny_pipe, ["a cat", "a dog"], [1, 2], config)
    [alone] = generate_traced(tiny_pipe, ["a dog"], [2], config)
    torch.testing.assert_close(pair[1].heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)


def test_several_images_per_prompt_keep_separate_maps(tiny_pipe):
    config = GenerationConfig(steps=2, height=64, width=64, images_per_prompt=2)
    out = generate_traced(tiny_pipe, ["a cat", "a dog"], [5, 6], config)
    assert [(s.prompt_index, s.image_index) for s in out] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert out[0].seed == 5 and out[1].seed not in (5, 6)
    assert not torch.allclose(out[0].heat_map.maps, out[1].heat_map.maps)
    [first] = generate_traced(tiny_pipe, ["a cat"], [5], GenerationConfig(**SMALL))
    torch.testing.assert_close(first.heat_map.maps, out[0].heat_map.maps, rtol=0, atol=1e-5)


def test_long_prompt_is_truncated_not_crashing(tiny_pipe):
    prompt = " ".join(["cat"] * 120)
    [s] = generate_traced(tiny_pipe, [prompt], [0], GenerationConfig(**SMALL))
    assert s.heat_map.prompt.truncated
    assert s.heat_map.prompt.num_tokens_total == 120
    assert len(s.heat_map.prompt.tokens) == 75
    assert s.heat_map.maps.shape[0] == 77


def test_trace_selection_changes_maps(tiny_pipe):
    base = GenerationConfig(steps=3, height=64, width=64)
    full = generate_traced(tiny_pipe, ["a cat"], [0], base)[0].heat_map.maps
    coarse = GenerationConfig(steps=3, height=64, width=64, trace=TraceConfig(factors=(2, 4)))
    early = GenerationConfig(steps=3, height=64, width=64, trace=TraceConfig(step_range=(0, 1)))
    assert not torch.allclose(full, generate_traced(tiny_pipe, ["a cat"], [0], coarse)[0].heat_map.maps)
    first_step = generate_traced(tiny_pipe, ["a cat"], [0], early)[0].heat_map.maps
    assert not torch.allclose(full, first_step)
    with pytest.raises(RuntimeError, match="no cross-attention was recorded"):
        generate_traced(tiny_pipe, ["a cat"], [0], GenerationConfig(**SMALL, trace=TraceConfig(factors=(64,))))


@pytest.mark.parametrize(
    "prompts,seeds,message",
    [([], [], "prompts is empty"), (["a"], [1, 2], "one seed per prompt"), ([" "], [1], "empty"), (["a"], [-1], "outside")],
)
def test_check_inputs(tiny_pipe, prompts, seeds, message):
    with pytest.raises(ValueError, match=message):
        generate_traced(tiny_pipe, prompts, seeds, GenerationConfig(**SMALL))


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 8"):
        GenerationConfig(height=60)
    with pytest.raises(ValueError, match="powers of two"):
        TraceConfig(factors=(3,))
    with pytest.raises(ValueError, match="step_range"):
        TraceConfig(step_range=(5, 2))


def test_all_layers_adds_mid_block(tiny_pipe):
    store = HeatMapStore(TraceConfig(layers="all"))
    with CrossAttentionTracer(tiny_pipe.unet, store) as tracer:
        assert any(name.startswith("mid_block") for name in tracer.traced_names)
    config = GenerationConfig(steps=2, height=64, width=64, trace=TraceConfig(layers="all"))
    [everything] = generate_traced(tiny_pipe, ["a cat"], [0], config)
    [reference] = generate_traced(tiny_pipe, ["a cat"], [0], GenerationConfig(**SMALL))
    assert not torch.allclose(everything.heat_map.maps, reference.heat_map.maps)

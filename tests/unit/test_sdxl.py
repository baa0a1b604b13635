"""SDXL (``StableDiffusionXLPipeline``) attribution on the built-in ``tiny-sdxl`` and on a second,
differently shaped SDXL: maps against a brute-force recomputation, shapes, batch invariance, the
mid block, the two tokenizers' agreement, the memory estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transforms.models import memory
from transforms.attribution import CrossAttentionTracer, GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import UNetArchitecture, architecture_of
from transforms.corpus import PromptRecord
from transforms.models.family import STABLE_DIFFUSION_XL, family_of
from transforms.models.loading import ModelSpec, load_pipeline
from transforms.shards.generator import ShardGenerator
from transforms.shards.sharding import ShardSpec
from transforms.models.tiny_sd import clip_vocab_and_merges
from transforms.models.tiny_sdxl import build_tiny_sdxl_pipeline, tiny_sdxl_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a second SDXL shape: two levels, two resnets per block, three transformer layers, other heads and widths
OTHER_WIDTHS = (24, 40)
OTHER_UNET = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    transformer_layers_per_block=(1, 3),
    attention_head_dim=(2, 8),
)
AGREED = "a photo of a cat"  # split alike by the full CLIP merges and by the first 5000
DISAGREED = "an armadillo eating watermelon"  # "eating" is one token only with the full merges


def short_merge_tokenizer():
    """A CLIP tokenizer with the CLIP vocabulary but only its first 5000 merges: long words split
    into other pieces than ``pipe.tokenizer``'s."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges[:5000], pad_token="!", model_max_length=77)


def build_other_sdxl():
    """The second SDXL shape, in memory."""
    pipe = build_tiny_sdxl_pipeline(OTHER_WIDTHS, **OTHER_UNET)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl_pipe():
    return load_pipeline(ModelSpec("tiny-sdxl", device="cpu"))


@pytest.fixture(scope="module")
def other_pipe():
    return build_other_sdxl()


def _grid(queries: int, latent: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of a layer with ``queries`` pixels (strided convolutions round up)."""
    for factor in (1, 2, 4, 8, 16):
        grid = (math.ceil(latent[0] / factor), math.ceil(latent[1] / factor))
        if grid[0] * grid[1] == queries:
            return grid
    raise AssertionError(f"no grid of {queries} queries on {latent}")


def brute_force(pipe, prompts, seeds, config: GenerationConfig) -> tuple[torch.Tensor, set[str]]:
    """Global maps recomputed by forward hooks on every ``attn2`` the selection keeps: the full
    softmax(Q·Kᵀ·scale) in float32 from the module's own ``to_q``/``to_k``, conditional half, summed
    over steps, bicubic to the latent grid, clamped, mean over layer-heads. Also the hooked names."""
    latent = (config.height // pipe.vae_scale_factor, config.width // pipe.vae_scale_factor)
    modules = {
        name: module
        for name, module in pipe.unet.named_modules()
        if name.endswith("attn2") and (config.trace.layers == "all" or not name.startswith("mid_block"))
    }
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module, args, kwargs) -> None:
            hidden = (args[0] if args else kwargs["hidden_states"]).float()
            context = kwargs["encoder_hidden_states"].float()
            heads = module.heads

            def split(x: torch.Tensor) -> torch.Tensor:
                return x.unflatten(-1, (heads, -1)).transpose(1, 2)

            q = split(F.linear(hidden, module.to_q.weight.float()))
            k = split(F.linear(context, module.to_k.weight.float()))
            probs = torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1)
            probs = probs[probs.shape[0] // 2 :]  # the conditional half of the CFG batch
            sums[name] = sums[name] + probs if name in sums else probs.clone()

        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in modules.items()]
    try:
        samples = generate_traced(pipe, prompts, seeds, config)
    finally:
        for handle in handles:
            handle.remove()
    total, count = 0, 0
    for maps in sums.values():
        n, heads, queries, keys = maps.shape
        h, w = _grid(queries, latent)
        grid = maps.permute(0, 1, 3, 2).reshape(n * heads, keys, h, w)
        up = F.interpolate(grid, size=latent, mode="bicubic", align_corners=False).clamp(min=0)
        total = total + up.reshape(n, heads, keys, *latent).sum(1)
        count += heads
    expected = total / count
    for i, sample in enumerate(samples):
        rows = len(sample.heat_map.prompt.tokens) + 2
        torch.testing.assert_close(sample.heat_map.maps, expected[i, :rows], rtol=0, atol=1e-5)
    return expected, {f"{name}.processor" for name in sums}


@pytest.mark.parametrize("layers", ["all", "reference"])
@pytest.mark.parametrize("model", ["tiny-sdxl", "other"])
def test_maps_equal_brute_force(model, layers, request):
    pipe = request.getfixturevalue("sdxl_pipe" if model == "tiny-sdxl" else "other_pipe")
    config = GenerationConfig(steps=2, height=64, width=96, guidance_scale=5.0, trace=TraceConfig(layers=layers))
    expected, hooked = brute_force(pipe, [AGREED, "a red bicycle against a wall"], [3, 4], config)
    assert expected.shape[-2:] == (8, 12)
    tracer = CrossAttentionTracer(pipe.unet, HeatMapStore(config.trace), architecture=architecture_of(pipe))
    assert hooked == set(tracer.traced_names)
    assert any(".transformer_blocks.1.attn2" in name for name in hooked)  # several transformer layers per block
    assert any(name.startswith("mid_block") for name in hooked) == (layers == "all")


def test_tiny_sdxl_is_sdxl_shaped(sdxl_pipe):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    unet = sdxl_pipe.unet.config
    assert isinstance(sdxl_pipe, StableDiffusionXLPipeline)
    assert family_of(str(tiny_sdxl_path())).name == STABLE_DIFFUSION_XL
    assert isinstance(architecture_of(sdxl_pipe), UNetArchitecture)
    assert unet.addition_embed_type == "text_time" and unet.down_block_types[0] == "DownBlock2D"
    assert max(unet.transformer_layers_per_block) > 1
    widths = sdxl_pipe.text_encoder.config.hidden_size, sdxl_pipe.text_encoder_2.config.hidden_size
    assert widths[0] != widths[1] and unet.cross_attention_dim == sum(widths)
    assert isinstance(sdxl_pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert sdxl_pipe.tokenizer_2.pad_token == "!" and sdxl_pipe.tokenizer.pad_token != "!"
    assert isinstance(sdxl_pipe.scheduler, EulerDiscreteScheduler)
    rebuilt = build_tiny_sdxl_pipeline().unet.state_dict()  # deterministic: the cached folder's weights again
    assert all(torch.equal(rebuilt[k], v) for k, v in sdxl_pipe.unet.state_dict().items())


def test_default_size_shape_and_values(sdxl_pipe):
    architecture = architecture_of(sdxl_pipe)
    assert architecture.map_grid(sdxl_pipe, 1024, 1024) == (128, 128)  # SDXL at 1024 px: latent = px / 8
    [sample] = generate_traced(sdxl_pipe, [AGREED], [0], GenerationConfig(steps=2, guidance_scale=5.0))
    assert sample.image.shape == (256, 256, 3)
    maps = sample.heat_map.maps
    assert maps.shape == (len(sample.heat_map.prompt.tokens) + 2, 32, 32)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    token_maps = sample.heat_map.token_maps.flatten(1)
    assert not torch.allclose(token_maps[1], token_maps[4])  # "photo" and "cat" differ


def test_batch_invariance(sdxl_pipe):
    config = GenerationConfig(steps=2, height=64, width=80, guidance_scale=5.0, trace=TraceConfig(layers="all"))
    batch = generate_traced(sdxl_pipe, ["a dog", AGREED, "two horses in a snowy field"], [7, 8, 9], config)
    [alone] = generate_traced(sdxl_pipe, [AGREED], [8], config)
    np.testing.assert_allclose(alone.image, batch[1].image, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone.heat_map.maps, batch[1].heat_map.maps, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0].heat_map.maps[:3], batch[1].heat_map.maps[:3])


def test_tokenizers_that_disagree_give_a_failure_record(sdxl_pipe):
    from diffusers import StableDiffusionXLPipeline

    other = short_merge_tokenizer()
    assert other.tokenize(AGREED) == sdxl_pipe.tokenizer.tokenize(AGREED)
    assert other.tokenize(DISAGREED) != sdxl_pipe.tokenizer.tokenize(DISAGREED)
    pipe = StableDiffusionXLPipeline(**{**sdxl_pipe.components, "tokenizer_2": other})
    pipe.set_progress_bar_config(disable=True)
    prompts = [PromptRecord(0, "p0", AGREED, 1), PromptRecord(1, "p1", DISAGREED, 2)]
    generator = ShardGenerator(pipe, GenerationConfig(steps=1, height=64, width=64), batch_size=2)
    result = generator.run_shard(ShardSpec(0, 1, 0, 2), prompts)
    assert [r.prompt for r in result.records] == [AGREED]
    [failure] = result.failures
    assert failure.id == "p1" and failure.stage == "generation"
    assert "ValueError" in failure.message and "split this prompt into different key positions" in failure.message


@pytest.mark.parametrize("prompt, agrees", [
    ("a cat, art!", True),          # "!" vs "!</w>": the same positions
    ("a dog!", True),
    ("yes!!!", False),              # "!!!</w>" is one key for the first tokenizer, three for the second
    ("what?!", False),
])
def test_sdxl_base_style_second_tokenizer_compares_positions(sdxl_pipe, prompt, agrees):
    """SDXL-base's ``tokenizer_2`` pads with "!", a special token: prompts ending in "!" keep their
    key positions and are traced; prompts whose positions shift are refused, naming why."""
    from diffusers import StableDiffusionXLPipeline

    from transforms.models.tiny_sd import build_clip_tokenizer

    second = build_clip_tokenizer()
    second.add_special_tokens({"pad_token": "!"})
    pipe = StableDiffusionXLPipeline(**{**sdxl_pipe.components, "tokenizer_2": second})
    architecture = architecture_of(pipe)
    if agrees:
        assert architecture.tokenize(pipe, prompt).tokens == architecture.tokenize(sdxl_pipe, prompt).tokens
    else:
        with pytest.raises(ValueError, match="different key positions"):
            architecture.tokenize(pipe, prompt)


def test_memory_estimate_counts_both_text_encoders(sdxl_pipe):
    configs = memory.model_configs(str(tiny_sdxl_path()))
    parts = (sdxl_pipe.unet, sdxl_pipe.vae, sdxl_pipe.text_encoder, sdxl_pipe.text_encoder_2)
    assert memory.weight_bytes(configs, "float32") == 4 * sum(p.numel() for m in parts for p in m.parameters())
    for layers in ("all", "reference"):
        trace = TraceConfig(layers=layers)
        tracer = CrossAttentionTracer(sdxl_pipe.unet, HeatMapStore(trace), architecture=architecture_of(sdxl_pipe))
        assert len(memory.traced_layers(configs["unet"], trace)) == len(tracer.traced_names)
    assert memory.model_factors(configs["unet"]) == [2, 4]  # no attention at the first level


@pytest.mark.slow
def test_memory_estimate_bounds_measured_peak(monkeypatch):
    """test_memory's measurement on tiny-sdxl: measured peak RSS growth <= estimate <= 20x measured."""
    from tests.unit import test_memory

    script = test_memory.MEASURE.replace('ModelSpec("tiny"', 'ModelSpec("tiny-sdxl"')
    assert script != test_memory.MEASURE
    if not test_memory._clear_refs_works():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    monkeypatch.setattr(test_memory, "MEASURE", script)
    test_memory.test_estimate_is_an_upper_bound_of_measured_peak(memory.model_configs(str(tiny_sdxl_path())))


def test_images_are_the_pipelines_own_call_with_and_without_a_negative_prompt(sdxl_pipe):
    """No negative prompt anywhere: none is passed, so SDXL uses its zero negative embedding
    (``force_zeros_for_empty_prompt``) as ``pipe(prompt)`` does; a given one is passed as given.
    (Tracing changes only the float order of the traced cross-attention: 1e-5.)"""
    config = GenerationConfig(steps=2, height=64, width=64, guidance_scale=5.0)
    assert sdxl_pipe.config.force_zeros_for_empty_prompt

    def own(**kwargs):
        return sdxl_pipe(AGREED, num_inference_steps=2, height=64, width=64, guidance_scale=5.0, output_type="np",
                         generator=[torch.Generator("cpu").manual_seed(8)], **kwargs).images[0]

    [plain] = generate_traced(sdxl_pipe, [AGREED], [8], config)
    [unset] = generate_traced(sdxl_pipe, [AGREED], [8], config, negative_prompts=[None])
    [given] = generate_traced(sdxl_pipe, [AGREED], [8], config, negative_prompts=["blurry"])
    np.testing.assert_allclose(plain.image, own(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(unset.image, own(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(given.image, own(negative_prompt="blurry"), rtol=0, atol=1e-5)
    assert np.abs(own() - own(negative_prompt="")).max() > 1e-3  # "" is not the zero embedding


def test_a_prompt_without_a_negative_is_the_same_in_a_batch_with_one(sdxl_pipe):
    config = GenerationConfig(steps=2, height=64, width=64, guidance_scale=5.0)
    mixed = generate_traced(sdxl_pipe, ["a dog", AGREED, "a cat"], [7, 8, 9], config,
                            negative_prompts=["blurry", None, "dark"])
    [alone] = generate_traced(sdxl_pipe, [AGREED], [8], config)
    [dog] = generate_traced(sdxl_pipe, ["a dog"], [7], config, negative_prompts=["blurry"])
    assert [s.prompt_index for s in mixed] == [0, 1, 2] and [s.seed for s in mixed] == [7, 8, 9]
    np.testing.assert_allclose(mixed[1].image, alone.image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(mixed[0].image, dog.image, rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1].heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)

"""colour-world pipeline (untrained weights): save/load round trip, traced generation, guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transforms.attribution.config import GenerationConfig
from transforms.attribution.generate import generate_traced
from transforms.attribution.tracer import CrossAttentionTracer
from transforms.attribution.store import HeatMapStore
from transforms.colour_world.model import ColourWorldTextEncoder
from transforms.colour_world.pipeline import ColourWorldPipeline
from transforms.colour_world.tokenizer import ColourWorldTokenizer

PROMPTS = ["a red circle and a blue square", "a green triangle and a yellow circle"]


@pytest.fixture(scope="module")
def pipe(untrained_colour_world) -> ColourWorldPipeline:
    return untrained_colour_world


def _images(p: ColourWorldPipeline, steps: int = 2) -> np.ndarray:
    gens = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    return p(PROMPTS, num_inference_steps=steps, generator=gens, output_type="np").images


def test_save_load_round_trip(pipe: ColourWorldPipeline, tmp_path) -> None:
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "ColourWorldPipeline"
    assert index["unet"] == ["transforms.colour_world.model", "ColourWorldUNet"]
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = ColourWorldPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.tokenizer, ColourWorldTokenizer)
    for a, b in zip(pipe.unet.state_dict().values(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(_images(pipe), _images(loaded))


def test_call_shapes_and_determinism(pipe: ColourWorldPipeline) -> None:
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.sample_size == 16
    images = _images(pipe)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, _images(pipe))
    pil = pipe(PROMPTS[0], num_inference_steps=1, output_type="pil").images
    assert pil[0].size == (32, 32)


def test_cross_attention_modules_are_traceable(pipe: ColourWorldPipeline) -> None:
    tracer = CrossAttentionTracer(pipe.unet, HeatMapStore())
    assert tracer.traced_names == sorted(
        ["down_attn1.processor", "down_attn2.processor", "up_attn2.processor", "up_attn1.processor"]
    )
    assert all(m.is_cross_attention for m in pipe.unet.cross_attentions())


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_traced_generation_gives_maps(pipe: ColourWorldPipeline, guidance: float) -> None:
    config = GenerationConfig(steps=2, guidance_scale=guidance, images_per_prompt=2)
    samples = generate_traced(pipe, PROMPTS, [3, 4], config)
    assert len(samples) == 4
    for s in samples:
        assert s.image.shape == (32, 32, 3)
        maps = s.heat_map.maps
        assert maps.shape == (9, 16, 16)  # null slot, 7 words, end slot on the 16x16 patch grid
        assert torch.isfinite(maps).all() and (maps >= 0).all()
        assert maps[0].sum() > 0 and maps[1:-1].sum() > 0
        assert maps[-1].abs().max() == 0  # the end slot is always masked
        assert s.heat_map.word_map("red" if s.prompt_index == 0 else "green").shape == (16, 16)
    # the processors came off again
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in pipe.unet.attn_processors.values())


def test_unknown_word_and_long_prompt_raise(pipe: ColourWorldPipeline) -> None:
    with pytest.raises(ValueError, match="unknown word 'cat'"):
        pipe(["a red cat and a blue square"], num_inference_steps=1)
    with pytest.raises(ValueError, match="at most 7"):
        pipe(["a red circle and a blue square and a"], num_inference_steps=1)
    with pytest.raises(ValueError, match="unknown word 'cat'"):
        generate_traced(pipe, ["a red cat"], [0], GenerationConfig(steps=1, guidance_scale=1.0))


def test_text_encoder_null_slot_and_masks() -> None:
    torch.manual_seed(0)
    te = ColourWorldTextEncoder()
    ids = torch.tensor([[0, 2, 6, 1, 0, 4, 7], [0, 2, 6, 0, 0, 0, 0]])
    word_mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    ctx, keys = te(ids, word_mask, torch.tensor([False, False]))
    assert ctx.shape == (2, 9, 64)
    assert keys.tolist() == [[True] * 8 + [False], [True] * 4 + [False] * 5]
    _, uncond = te(ids, word_mask, torch.tensor([True, True]))
    assert uncond.tolist() == [[True] + [False] * 8] * 2

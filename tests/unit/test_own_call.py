"""One rule for every family: a traced generation is the pipeline's own call with the same
arguments (SDXL, SD3 and Flux have theirs in test_sdxl/test_sd3/test_flux); here SD 1.x (with and
without a negative prompt, with CFG) and the three shipped colour worlds (their own ``__call__``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.attribution import GenerationConfig, generate_traced
from transforms.colour_world.assets import SHIPPED_WORLDS, shipped_model_path
from transforms.colour_world.pipeline import load_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _own(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    return pipe(prompt, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", **kwargs).images[0]


@pytest.mark.parametrize("negative", [None, "blurry, dark"])
def test_stable_diffusion_images_are_its_own_call(tiny_pipe, negative):
    config = GenerationConfig(steps=2, height=64, width=64, guidance_scale=7.5)
    [sample] = generate_traced(tiny_pipe, ["a dog on a sofa"], [11], config, negative_prompts=[negative])
    given = {} if negative is None else {"negative_prompt": negative}
    own = _own(tiny_pipe, "a dog on a sofa", 11, height=64, width=64, num_inference_steps=2, guidance_scale=7.5, **given)
    np.testing.assert_allclose(sample.image, own, rtol=0, atol=1e-5)
    other = _own(tiny_pipe, "a dog on a sofa", 12, height=64, width=64, num_inference_steps=2, guidance_scale=7.5, **given)
    assert np.abs(other - own).max() > 1e-3  # the comparison can fail: another seed is another image


@pytest.mark.parametrize("world", sorted(SHIPPED_WORLDS))
def test_colour_world_images_are_its_own_call(world):
    pipe = load_world(shipped_model_path(world))
    prompts, seeds = ["a red circle and a blue square", "a green triangle and a yellow circle"], [5, 6]
    samples = generate_traced(pipe, prompts, seeds, GenerationConfig(steps=20, guidance_scale=1.0))
    for sample, prompt, seed in zip(samples, prompts, seeds):
        own = _own(pipe, prompt, seed, num_inference_steps=20, guidance_scale=1.0)
        assert sample.image.shape == own.shape == (32, 32, 3)
        # the traced attention sums in another order, and 20 steps carry that to ~2e-5
        np.testing.assert_allclose(sample.image, own, rtol=0, atol=1e-4)
    assert np.abs(samples[0].image - samples[1].image).max() > 1e-2

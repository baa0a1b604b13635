"""Chroma on the built-in tiny-chroma: Flux's blocks with the pipeline's attention mask and CFG as two
transformer calls per step. Maps against a brute-force masked joint softmax of the conditional calls
only, images equal to the pipeline's own call, other folder shapes, the family's refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.test_flux import GRID, SIZE, BruteForce
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.chroma import ChromaArchitecture
from transforms.models.family import CHROMA, check_family_settings, family_of
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_chroma import TINY_CHROMA_MAX_LENGTH, build_tiny_chroma_pipeline

PROMPTS = ["a hotdog on a Plate", "two cats and a dog"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(ModelSpec("tiny-chroma", device="cpu"))


def config(guidance: float = 5.0, steps: int = 2, **trace) -> GenerationConfig:
    return GenerationConfig(steps=steps, height=SIZE, width=SIZE, guidance_scale=guidance, trace=TraceConfig(**trace))


def _own(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    return pipe(prompt, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", height=SIZE, width=SIZE,
                max_sequence_length=TINY_CHROMA_MAX_LENGTH, **kwargs).images[0]


def _check(pipe, generation: GenerationConfig, normalize: str = "all", heads: str = "mean") -> None:
    brute = BruteForce(pipe.transformer, normalize, heads)
    try:
        samples = generate_traced(pipe, PROMPTS, [3, 4], generation)
    finally:
        brute.close()
    cfg = generation.guidance_scale > 1
    calls = len(next(iter(brute.calls.values())))
    assert calls == generation.steps * (2 if cfg else 1)  # CFG: a conditional and an unconditional call per step
    expected = brute.global_maps(every=2 if cfg else 1)
    for i, sample in enumerate(samples):
        n = len(sample.heat_map.prompt.tokens)
        torch.testing.assert_close(sample.heat_map.maps, expected[i, : n + 1], rtol=0, atol=1e-5)
    if cfg:  # the check can fail: every call together is another map
        assert (brute.global_maps()[0, : len(samples[0].heat_map.prompt.tokens) + 1] / 2
                - samples[0].heat_map.maps).abs().max() > 1e-3


def test_architecture_and_geometry(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, ChromaArchitecture)
    assert set(architecture.traced_modules(pipe.transformer).values()) == {"double", "single"}
    assert len(architecture.traced_modules(pipe.transformer)) == 4
    source = resolve_model_source("tiny-chroma")
    assert family_of(source).name == CHROMA and model_geometry(ModelSpec("tiny-chroma"), source) == (256, 256, 4)
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (0, 0, TINY_CHROMA_MAX_LENGTH - 1)


@pytest.mark.parametrize("guidance", [5.0, 1.0], ids=["cfg-two-calls", "no-cfg"])
def test_maps_equal_brute_force_masked_softmax_of_the_conditional_calls(pipe, guidance):
    _check(pipe, config(guidance))


@pytest.mark.parametrize("normalize, heads", [("text", "mean"), ("all", "max")])
def test_normalisation_and_head_max(pipe, normalize, heads):
    _check(pipe, config(joint_normalize=normalize, heads=heads), normalize, heads)


def test_the_mask_is_part_of_the_softmax(pipe):
    """The pipeline's float key mask is added to the scores: without it the maps differ."""
    [sample] = generate_traced(pipe, PROMPTS[:1], [3], config())
    brute = BruteForce(pipe.transformer, "all", "mean", masked=False)
    try:
        generate_traced(pipe, PROMPTS[:1], [3], config())
    finally:
        brute.close()
    n = len(sample.heat_map.prompt.tokens)
    assert (brute.global_maps(every=2)[0, : n + 1] - sample.heat_map.maps).abs().max() > 1e-3


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_images_are_the_pipelines_own_call(pipe, negative):
    given = {} if negative is None else {"negative_prompt": negative}
    [sample] = generate_traced(pipe, PROMPTS[:1], [5], config(), negative_prompts=[negative])
    own = _own(pipe, PROMPTS[0], 5, num_inference_steps=2, guidance_scale=5.0, **given)
    assert np.array_equal(sample.image, own)  # the model's own kernel, with its mask, makes the output
    other = _own(pipe, PROMPTS[0], 6, num_inference_steps=2, guidance_scale=5.0, **given)
    assert np.abs(other - own).max() > 1e-3


def test_batch_equals_single_runs(pipe):
    batch = generate_traced(pipe, PROMPTS, [3, 4], config())
    for sample, prompt, seed in zip(batch, PROMPTS, [3, 4]):
        [alone] = generate_traced(pipe, [prompt], [seed], config())
        torch.testing.assert_close(sample.heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)


def test_folder_of_another_shape(tmp_path: Path):
    folder = tmp_path / "chroma"
    build_tiny_chroma_pipeline(num_layers=1, num_single_layers=3, heads=4).save_pretrained(folder)
    pipe = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert len(architecture_of(pipe).traced_modules(pipe.transformer)) == 4
    _check(pipe, config())


def test_family_refusals_are_one_line():
    source = resolve_model_source("tiny-chroma")
    family = family_of(source)
    with pytest.raises(ValueError, match="approximator"):
        check_family_settings(family, (256, 256), (256, 256), None, False, concept_maps=True, source=source)
    with pytest.raises(ValueError, match="flow matching"):
        check_family_settings(family, (256, 256), (256, 256), "ddim", False, source=source)

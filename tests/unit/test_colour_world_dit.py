"""colour-world-dit: a FluxPipeline subclass without a VAE that the Flux architecture traces
unchanged: folder round trip, family and geometry, tracing never changes an image, ConceptAttention
on it, bad prompts refused, and its training form resumes deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transforms.attribution.architectures import architecture_of
from transforms.attribution.config import ConceptConfig, GenerationConfig
from transforms.attribution.generate import generate_traced, image_seed
from transforms.colour_world import dit
from transforms.colour_world.pipeline import load_world
from transforms.colour_world.train import DIT_FORM, build_untrained, train
from transforms.models.family import FLUX, colour_world_geometry, family_of

PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def pipe(untrained_colour_world_dit_folder):
    return load_world(untrained_colour_world_dit_folder)


def test_folder_is_a_flux_model_without_a_vae(untrained_colour_world_dit_folder, pipe) -> None:
    index = json.loads((untrained_colour_world_dit_folder / "model_index.json").read_text())
    assert index["_class_name"] == "ColourWorldDiTPipeline" and index["vae"] == [None, None]
    family = family_of(str(untrained_colour_world_dit_folder))
    assert family.name == FLUX and family.pixel_space
    assert colour_world_geometry(str(untrained_colour_world_dit_folder)) == (32, 32, 2)
    assert architecture_of(pipe).name == "flux" and pipe.vae is None and pipe.vae_scale_factor == 1
    assert pipe.transformer.config.num_layers == 2 and pipe.transformer.config.num_single_layers == 2
    assert pipe.text_encoder_2.config.num_layers == 0
    # the pooled CLIP vector is disconnected: the prompt reaches the image through attention only
    assert all(not p.any() for p in pipe.transformer.time_text_embed.text_embedder.parameters())


def test_tokens_are_the_words_then_end_and_pads(pipe) -> None:
    ids = pipe.tokenizer_2(PROMPT, padding="max_length", max_length=dit.TEXT_TOKENS).input_ids
    pieces = pipe.tokenizer_2.convert_ids_to_tokens(ids)
    assert pieces[:8] == ["▁a", "▁red", "▁circle", "▁and", "▁a", "▁blue", "▁square", "</s>"]
    assert pieces[8:] == ["<pad>"] * 8


def test_tracing_never_changes_the_image(pipe) -> None:
    config = GenerationConfig(steps=3, guidance_scale=1.0)
    [sample] = generate_traced(pipe, [PROMPT], [5], config)
    plain = pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(image_seed(5, 0)),
                 output_type="np").images[0]
    np.testing.assert_array_equal(sample.image, plain)
    assert sample.image.shape == (32, 32, 3)
    # 7 word tokens + </s>; no start token on the T5 side
    assert tuple(sample.heat_map.maps.shape) == (8, 16, 16)
    assert torch.isfinite(sample.heat_map.maps).all() and (sample.heat_map.maps >= 0).all()


def test_concept_maps_on_the_dit_world(pipe) -> None:
    config = GenerationConfig(steps=2, guidance_scale=1.0, concepts=ConceptConfig())
    [sample] = generate_traced(pipe, [PROMPT], [1], config)
    assert sample.concepts == ["red", "circle", "blue", "square"]
    maps = sample.concept_maps
    assert tuple(maps.shape) == (4, 16, 16)
    torch.testing.assert_close(maps.sum(0), torch.ones(16, 16))  # softmax over concepts, per patch


@pytest.mark.parametrize("prompt, message", [
    ("a purple circle and a blue square", "unknown word 'purple'"),
    ("a red circle and a blue square and a red", "10 words given"),
])
def test_bad_prompts_are_refused(pipe, prompt, message) -> None:
    with pytest.raises(ValueError, match=message):
        pipe(prompt, num_inference_steps=1)


def test_dit_training_resumes_exactly(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        whole = train(tmp_path / "whole", minutes=10, batch=2, threads=1, max_steps=2, form="dit")
        train(tmp_path / "split", minutes=10, batch=2, threads=1, max_steps=1, form="dit")
        split = train(tmp_path / "split", minutes=10, resume=True, batch=2, threads=1, max_steps=2, form="unet")
    finally:
        torch.set_num_threads(threads)
    assert whole["steps"] == split["steps"] == 2 and whole["form"] == DIT_FORM == split["form"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["losses"] == b["losses"]
    for x, y in zip(a["ema"].values(), b["ema"].values()):
        assert torch.equal(x, y)
    loaded = load_world(tmp_path / "whole" / "pipeline")
    for name, value in loaded.transformer.state_dict().items():
        assert torch.equal(value, a["ema"][f"transformer.{name}"])
    # the frozen pooled projection stays zero through training
    assert all(not p.any() for p in loaded.transformer.time_text_embed.text_embedder.parameters())


def test_untrained_forms_differ_in_shape() -> None:
    assert type(build_untrained(block=DIT_FORM)).__name__ == "DiTDenoiser"
    assert type(build_untrained()).__name__ == "Denoiser"

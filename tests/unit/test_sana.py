"""Sana attribution on the tiny Sana model: DAAM on the cross-attention DiT's ``attn2`` against a
brute-force softmax with the Gemma key mask, the prompt's keys behind the complex human
instruction (on and off) checked against the encoder's own input ids, images equal to the
pipeline's own call, other folder shapes (QK-norms), the family's refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.test_pixart import (
    PROMPT,
    _own,
    _traced_and_brute,
    check_batch_equals_single_runs,
    check_folder_without_bins,
    check_own_call,
    check_steps_are_told_apart,
)
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution import architectures
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.sana import SanaArchitecture, encoder_window
from transforms.models.family import SANA, check_family_settings, family_of, label_defaults
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_sana import build_tiny_sana_pipeline

SMALL = dict(steps=2, height=512, width=512, guidance_scale=4.5)
CALL = dict(height=512, width=512, num_inference_steps=2, guidance_scale=4.5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    pipe = build_tiny_sana_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def instruction_off(monkeypatch):
    """Sana traced with ``complex_human_instruction=None`` passed to the pipeline."""
    monkeypatch.setitem(architectures._BY_PIPELINE, "SanaPipeline", SanaArchitecture(instruction=False))


def _encoder_inputs(pipe: Any, prompt: str, **kwargs: Any) -> list[torch.Tensor]:
    """The input ids of every text-encoder call of the pipeline's own call (cond first)."""
    seen: list[torch.Tensor] = []
    hook = pipe.text_encoder.register_forward_pre_hook(
        lambda _m, args, kw: seen.append((args[0] if args else kw["input_ids"]).clone()), with_kwargs=True
    )
    try:
        pipe(prompt, num_inference_steps=1, output_type="latent", **kwargs)
    finally:
        hook.remove()
    return seen


def test_architecture_traces_every_cross_attention(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, SanaArchitecture)
    assert architecture.traced_modules(pipe.transformer) == {
        f"transformer_blocks.{i}.attn2.processor": "cross" for i in range(2)
    }  # attn1 is linear attention: no softmax to trace
    assert architecture.map_grid(pipe, 512, 512) == (16, 16) and architecture.default_size(pipe) == (512, 512)
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (1, 1, 298)  # <bos> at key 0, 300 keys


@pytest.mark.parametrize("guidance", [4.5, 1.0], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("heads", ["mean", "max"])
def test_maps_equal_brute_force_softmax_with_the_key_mask(pipe, guidance, heads):
    config = GenerationConfig(**{**SMALL, "guidance_scale": guidance}, trace=TraceConfig(layers="all", heads=heads))
    samples, reference = _traced_and_brute(pipe, [PROMPT, "a cat"], config)
    for i, sample in enumerate(samples):
        maps = sample.heat_map.maps
        n = len(sample.heat_map.prompt.tokens)
        assert maps.shape == (n + 2, 16, 16) and torch.isfinite(maps).all() and (maps >= 0).all()
        assert (reference[i, : n + 2] - maps).abs().max().item() <= 1e-5  # keys 0 … n+1: <bos>, tokens, a pad
        # the token rows are keys 1 … n: one key off either way is another map
        assert (reference[i, 2 : n + 2] - sample.heat_map.token_maps).abs().max().item() > 1e-3
        assert (reference[i, 0:n] - sample.heat_map.token_maps).abs().max().item() > 1e-3
        tokens = sample.heat_map.token_maps
        assert tokens.flatten(1).std(1).min() > 1e-3  # every token map has spatial structure, not a flat map


def test_the_key_mask_is_part_of_the_softmax(pipe):
    """Without the −10000 bias on padded keys the pads take most of the mass: the check can fail."""
    config = GenerationConfig(**SMALL, trace=TraceConfig(layers="all"))
    samples, unmasked = _traced_and_brute(pipe, [PROMPT], config, masked=False)
    n = len(samples[0].heat_map.prompt.tokens)
    assert (unmasked[0, : n + 2] - samples[0].heat_map.maps).abs().max().item() > 1e-2


def test_prompt_keys_behind_the_instruction_are_the_encoders_input_ids(pipe):
    """Instruction on (the default): the encoder gets <bos>, the instruction, the prompt, pads;
    ``select_index`` keeps <bos> and the last 299 positions: the prompt's tokens at keys 1 … n."""
    tokenized = architecture_of(pipe).tokenize(pipe, PROMPT)
    n = len(tokenized.token_ids)
    [cond, uncond] = _encoder_inputs(pipe, PROMPT)
    assert cond.shape[1] > 300 and uncond.shape[1] == 300  # the instruction is prepended to the prompt only
    kept = cond[0, [0, *range(-299, 0)]].tolist()
    assert kept[0] == pipe.tokenizer.bos_token_id and kept[1 : n + 1] == tokenized.token_ids
    assert set(kept[n + 1 :]) == {pipe.tokenizer.pad_token_id}  # Gemma appends no <eos>
    assert pipe.tokenizer.decode(kept[1 : n + 1]) == " a hotdog, on a plate!"  # the instruction's space: ``▁a``
    assert tokenized.tokens == ["a", "hot", "dog", ",", "on", "a", "plate", "!"]
    # the keys as the architecture rebuilds them
    instruction = architecture_of(pipe).complex_human_instruction(pipe)
    window = encoder_window(pipe.tokenizer, "a hotdog, on a plate!", instruction, 300)
    assert window.keys == kept and window.offset == 1 and window.mask == [1] * (n + 1) + [0] * (299 - n)


@pytest.mark.parametrize(
    "prompt,first_word,count",
    [("Word " * 400, "word", 298),  # behind the CHI ``▁word`` is one piece, alone ``w`` ``ord``: the keys' count
     ("Éclair on a plate", "éclair", 9)],  # ``▁`` does not join a byte-fallback character: a lone space at key 1
    ids=["truncated", "lone-space"],
)
def test_prompt_tokens_are_the_keys_pieces_not_the_prompts_alone(pipe, prompt, first_word, count):
    tokenized = architecture_of(pipe).tokenize(pipe, prompt)
    [cond, _] = _encoder_inputs(pipe, prompt)
    kept = cond[0, [0, *range(-299, 0)]].tolist()
    assert len(tokenized.token_ids) == count and kept[1 : count + 1] == tokenized.token_ids
    assert tokenized.words[0].word == first_word and tokenized.truncated == (count == 298)
    assert tokenized.token_ids != pipe.tokenizer(prompt.lower().strip(), add_special_tokens=False).input_ids[:count]


def test_prompt_keys_without_the_instruction(pipe, instruction_off):
    tokenized = architecture_of(pipe).tokenize(pipe, PROMPT)
    [cond, _] = _encoder_inputs(pipe, PROMPT, complex_human_instruction=None)
    assert cond.shape[1] == 300
    ids = cond[0].tolist()
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[1 : len(tokenized.token_ids) + 1] == tokenized.token_ids
    assert pipe.tokenizer.decode(tokenized.token_ids) == "a hotdog, on a plate!"  # no space before the first token


def test_maps_and_images_without_the_instruction(pipe, instruction_off):
    config = GenerationConfig(**SMALL, trace=TraceConfig(layers="all"))
    samples, reference = _traced_and_brute(pipe, [PROMPT], config)
    maps = samples[0].heat_map.maps
    assert (reference[0, : maps.shape[0]] - maps).abs().max().item() <= 1e-5
    own = _own(pipe, PROMPT, 0, complex_human_instruction=None, **CALL)
    np.testing.assert_allclose(samples[0].image, own, rtol=0, atol=1e-5)
    with_instruction = _own(pipe, PROMPT, 0, **CALL)  # the instruction changes the prompt's embeddings
    assert np.abs(with_instruction - own).max() > 1e-3


def test_a_prompt_the_instruction_tokenises_into_other_keys_is_refused(pipe, monkeypatch):
    """An instruction whose last piece is not a lone space leaves it at key 1: the prompt would sit
    at key 2, and the maps are refused rather than shifted."""
    architecture = architecture_of(pipe)
    monkeypatch.setattr(SanaArchitecture, "complex_human_instruction", lambda self, pipe: ["User Prompt:"])
    window = encoder_window(pipe.tokenizer, "a cat", ["User Prompt:"], 300)
    assert window.offset == 2 and window.keys[2:4] == pipe.tokenizer("a cat", add_special_tokens=False).input_ids
    with pytest.raises(ValueError, match="at key 2, not 1"):
        architecture.tokenize(pipe, "a cat")


def test_keys_that_do_not_hold_the_prompts_tokens_are_refused(pipe, monkeypatch):
    from transforms.attribution.architectures import sana

    real = sana.encoder_window

    def merged(*args: Any) -> sana.TextWindow:
        window = real(*args)
        return dataclasses.replace(window, keys=window.keys[:2] + [pipe.tokenizer.unk_token_id] + window.keys[3:])

    monkeypatch.setattr(sana, "encoder_window", merged)
    with pytest.raises(ValueError, match="do not hold this prompt's tokens"):
        architecture_of(pipe).tokenize(pipe, "a red cat")


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_images_are_the_pipelines_own_call(pipe, negative):
    check_own_call(pipe, SMALL, negative)


def test_words_come_from_the_text_the_pipeline_encodes(pipe):
    tokenized = architecture_of(pipe).tokenize(pipe, "  A Hotdog, on a PLATE!")
    assert tokenized.prompt == "  A Hotdog, on a PLATE!"  # the pipeline is given the prompt as written
    assert tokenized.tokens == ["a", "hot", "dog", ",", "on", "a", "plate", "!"]
    assert [w.word for w in tokenized.words] == ["a", "hotdog", ",", "on", "a", "plate", "!"]


def test_batch_equals_single_runs(pipe):
    check_batch_equals_single_runs(pipe, GenerationConfig(**SMALL))


def test_folder_of_another_shape_with_qk_norms_without_bins(tmp_path: Path):
    """3 blocks, 4 self- and 3 cross-attention heads, Sana 1.5's QK-norms, a sample size with no
    bin table (the run turns binning off, as the pipeline would raise)."""
    folder = tmp_path / "sana"
    variant = dict(num_layers=3, heads=4, cross_heads=3, sample_size=8, qk_norm="rms_norm_across_heads")
    build_tiny_sana_pipeline(**variant).save_pretrained(folder)
    spec = ModelSpec(str(folder), device="cpu")
    assert family_of(str(folder)).name == SANA
    assert model_geometry(spec, str(folder)) == (256, 256, 32)
    pipe = load_pipeline(spec)
    assert pipe.transformer.transformer_blocks[0].attn2.norm_q is not None
    check_folder_without_bins(pipe, 256, 8)


def test_family_refusals_are_one_line():
    source = resolve_model_source("tiny-sana")
    family = family_of(source)
    assert family.name == SANA and family.guidance_scale == 4.5
    check_family_settings(family, (512, 512), (512, 512), None, False, source=source)  # a bin size: fine
    check_family_settings(family, (384, 640), (512, 512), None, False, source=source)  # 0.6 bin of the 512 table
    with pytest.raises(ValueError, match=r"Sana snaps sizes to its aspect-ratio bins.*--height 448 --width 576"):
        check_family_settings(family, (512, 640), (512, 512), None, False, source=source)
    with pytest.raises(ValueError, match=r"not Sana's DiT blocks: add --no-refine"):
        check_family_settings(family, (512, 512), (512, 512), None, True, source=source)
    with pytest.raises(ValueError, match="drop --scheduler"):
        check_family_settings(family, (512, 512), (512, 512), "ddim", False, source=source)
    with pytest.raises(ValueError, match="joint-attention"):
        check_family_settings(family, (512, 512), (512, 512), None, False, concept_maps=True, source=source)
    assert label_defaults("tiny-sana") == {"label_maps": "daam", "refine": False, "threshold": 0.5}


def test_steps_are_told_apart(pipe):
    check_steps_are_told_apart(pipe, SMALL)


def test_benchmark_shape_runs_and_its_brute_capture_keeps_every_softmax(one_torch_thread):
    """``benchmarks.architecture_cost --arch sana --tiny``: the comparison capture (Sana's processor
    calls SDPA itself) changes no pixel and keeps each ``attn2``'s full probabilities."""
    from tests.unit import test_benchmarks_smoke as smoke

    smoke.test_brute_capture_keeps_every_traced_layers_softmax(one_torch_thread, "sana", 1)

"""Flux.2 [klein] on the built-in tiny-flux2-klein: the image → text slice of the joint softmax of
double-stream (``Flux2Attention``) and single-stream (``Flux2ParallelSelfAttention``) blocks against
a brute-force fp64 softmax, only the user prompt's keys of the chat-templated text, true CFG as two
calls (the conditional one mapped), images equal to the pipeline's own call, other folder shapes,
the family's refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2AttnProcessor,
    Flux2ParallelSelfAttention,
    Flux2ParallelSelfAttnProcessor,
)

from tests.unit.test_flux import BruteForce, _rotate
from transforms.attribution import GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.flux2 import (
    DaamFlux2AttnProcessor,
    DaamFlux2SingleAttnProcessor,
    Flux2Architecture,
    Flux2DevArchitecture,
)
from transforms.models.family import FLUX2, check_family_settings, family_of
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_flux2 import (
    TINY_FLUX2_DEV_MAX_LENGTH,
    TINY_FLUX2_MAX_LENGTH,
    build_tiny_flux2_klein_pipeline,
    build_tiny_flux2_pipeline,
)

SIZE = 32  # px: a 16x16 map grid (VAE factor 1 x 2x2 packing), test_flux's GRID
PROMPTS = ["a hotdog on a Plate", "two cats and a dog"]
OFFSET = 3  # <|im_start|> user \n: the template's tokens before the prompt's

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Flux2BruteForce(BruteForce):
    """test_flux's brute force on Flux.2's modules, fp64: double-stream blocks as Flux's, the
    single-stream blocks' q/k from their fused QKV + MLP projection."""

    module_class = (Flux2Attention, Flux2ParallelSelfAttention)
    dtype = torch.float64

    def joint_qk(self, module, kwargs):
        if isinstance(module, Flux2Attention):
            return super().joint_qk(module, kwargs)
        projected = module.to_qkv_mlp_proj(kwargs["hidden_states"])
        q, k, _ = projected[..., : 3 * module.inner_dim].chunk(3, dim=-1)
        cos, sin = kwargs["image_rotary_emb"]
        q, k = (norm(x.unflatten(-1, (module.heads, -1))) for norm, x in ((module.norm_q, q), (module.norm_k, k)))
        return _rotate(q, cos, sin, self.dtype), _rotate(k, cos, sin, self.dtype)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(ModelSpec("tiny-flux2-klein", device="cpu"))


def config(guidance: float = 4.0, steps: int = 2, **trace) -> GenerationConfig:
    return GenerationConfig(steps=steps, height=SIZE, width=SIZE, guidance_scale=guidance, trace=TraceConfig(**trace))


def _own(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    return pipe(prompt=prompt, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", height=SIZE,
                width=SIZE, max_sequence_length=TINY_FLUX2_MAX_LENGTH, **kwargs).images[0]


def _check(pipe, generation: GenerationConfig, normalize: str = "all", heads: str = "mean", offset: int = OFFSET):
    brute = Flux2BruteForce(pipe.transformer, normalize, heads)
    try:
        samples = generate_traced(pipe, PROMPTS, [3, 4], generation)
    finally:
        brute.close()
    cfg = generation.guidance_scale > 1 and not pipe.config.get("is_distilled", True)  # klein base models
    calls = len(next(iter(brute.calls.values())))
    assert calls == generation.steps * (2 if cfg else 1)  # CFG: a conditional and an unconditional call per step
    expected = brute.global_maps(every=2 if cfg else 1)
    for i, sample in enumerate(samples):
        n = len(sample.heat_map.prompt.tokens)
        torch.testing.assert_close(sample.heat_map.maps, expected[i, offset : offset + n + 1], rtol=0, atol=1e-5)
    n = len(samples[0].heat_map.prompt.tokens)
    # the check can fail: the keys one earlier (a template token first) or every call together are other maps
    assert (expected[0, offset - 1 : offset + n] - samples[0].heat_map.maps).abs().max() > 1e-3
    if cfg:
        assert (brute.global_maps()[0, offset : offset + n + 1] / 2 - samples[0].heat_map.maps).abs().max() > 1e-3
    return samples


def test_architecture_and_geometry(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, Flux2Architecture) and not architecture.uses_cfg(config())
    assert architecture.traced_modules(pipe.transformer) == {
        "transformer_blocks.0.attn.processor": "double", "single_transformer_blocks.0.attn.processor": "single"
    }
    source = resolve_model_source("tiny-flux2-klein")
    assert family_of(source).name == FLUX2 and family_of(source).guidance_scale == 4.0
    assert model_geometry(ModelSpec("tiny-flux2-klein"), source) == (128, 128, 2)  # 128 latents x VAE factor 1
    assert architecture.default_size(pipe) == (128, 128) and architecture.map_grid(pipe, 32, 64) == (16, 32)
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (OFFSET, 0, TINY_FLUX2_MAX_LENGTH - OFFSET - 1)


def test_prompt_keys_are_the_pipelines_own_tokenisation_of_the_templated_text(pipe):
    prompt = Flux2Architecture().tokenize(pipe, PROMPTS[0])
    assert prompt.scheme == "byte-level" and prompt.tokens == ["a", "hot", "dog", "on", "a", "pla", "te"]
    assert [(w.word, w.start, w.end) for w in prompt.words] == [
        ("a", 0, 1), ("hotdog", 1, 3), ("on", 3, 4), ("a", 4, 5), ("Plate", 5, 7)
    ]
    text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=False)
    assert text == f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ids = pipe.tokenizer(text, padding="max_length", truncation=True, max_length=TINY_FLUX2_MAX_LENGTH).input_ids
    n = len(prompt.token_ids)
    assert ids[OFFSET : OFFSET + n] == prompt.token_ids  # the keys the pipeline encodes
    assert pipe.tokenizer.convert_ids_to_tokens(ids[:OFFSET + n + 1]) == [
        "<|im_start|>", "user", "\u010a", *pipe.tokenizer.convert_ids_to_tokens(prompt.token_ids), "<|im_end|>"
    ]  # the global map's last row is <|im_end|>
    assert len(ids) == TINY_FLUX2_MAX_LENGTH and ids[-1] == pipe.tokenizer.pad_token_id  # pads are keys too


@pytest.mark.parametrize("guidance", [4.0, 1.0], ids=["cfg-two-calls", "no-cfg"])
def test_maps_equal_brute_force_softmax_of_the_prompt_keys(pipe, guidance):
    _check(pipe, config(guidance))


@pytest.mark.parametrize("normalize, heads", [("text", "mean"), ("all", "max")])
def test_normalisation_and_head_max(pipe, normalize, heads):
    _check(pipe, config(joint_normalize=normalize, heads=heads), normalize, heads)


def test_a_steps_first_call_is_the_conditional_one(pipe):
    """The store maps a step's first transformer call: under CFG it gets the prompt's embeddings."""
    seen = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True
    )
    try:
        generate_traced(pipe, PROMPTS[:1], [3], config(steps=1))
    finally:
        handle.remove()
    conditional, _ = pipe.encode_prompt(PROMPTS[0], max_sequence_length=TINY_FLUX2_MAX_LENGTH)
    unconditional, _ = pipe.encode_prompt("", max_sequence_length=TINY_FLUX2_MAX_LENGTH)
    assert len(seen) == 2 and torch.equal(seen[0], conditional) and torch.equal(seen[1], unconditional)


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_images_are_the_pipelines_own_call(pipe, guidance):
    [sample] = generate_traced(pipe, PROMPTS[:1], [5], config(guidance))
    own = _own(pipe, PROMPTS[0], 5, num_inference_steps=2, guidance_scale=guidance)
    assert np.array_equal(sample.image, own)  # the model's own kernel makes the output
    assert np.abs(_own(pipe, PROMPTS[0], 6, num_inference_steps=2, guidance_scale=guidance) - own).max() > 1e-3


def test_batch_equals_single_runs(pipe):
    batch = generate_traced(pipe, PROMPTS, [3, 4], config())
    for sample, prompt, seed in zip(batch, PROMPTS, [3, 4]):
        [alone] = generate_traced(pipe, [prompt], [seed], config())
        torch.testing.assert_close(sample.heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)
        np.testing.assert_allclose(sample.image, alone.image, rtol=0, atol=1e-5)


def test_processor_outputs_equal_diffusers_processors_on_bare_modules():
    torch.manual_seed(0)
    double = Flux2Attention(query_dim=16, heads=2, dim_head=8, added_kv_proj_dim=16, out_dim=16)
    single = Flux2ParallelSelfAttention(query_dim=16, heads=2, dim_head=8, out_dim=16, mlp_ratio=3.0)
    image, text = torch.randn(2, 6, 16), torch.randn(2, 3, 16)
    rotary = (torch.randn(9, 8), torch.randn(9, 8))
    store = HeatMapStore()
    store.begin(2, cfg=False, latent_size=(2, 3))
    expected = Flux2AttnProcessor()(double, image, text, None, rotary)
    got = DaamFlux2AttnProcessor(store, "d", Flux2AttnProcessor())(double, image, text, None, rotary)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    joint = torch.cat([text, image], 1)
    expected = Flux2ParallelSelfAttnProcessor()(single, joint, None, rotary)
    assert torch.equal(DaamFlux2SingleAttnProcessor(store, "s", Flux2ParallelSelfAttnProcessor())(single, joint, None, rotary),
                       expected)
    assert store.sums["d"].shape == store.sums["s"].shape == (2, 1, 6, 3)  # (images, summed heads, h*w, text keys)


def test_folder_of_another_shape_and_the_distilled_variant(tmp_path: Path):
    folder = tmp_path / "klein"
    build_tiny_flux2_klein_pipeline(num_layers=2, num_single_layers=2, heads=4, head_dim=8, max_length=32,
                                    is_distilled=True).save_pretrained(folder)
    other = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert len(architecture_of(other).traced_modules(other.transformer)) == 4
    assert architecture_of(other).text_layout(other).max_tokens == 32 - OFFSET - 1
    _check(other, config())  # distilled: one call per step whatever the guidance
    assert Flux2BruteForce.dtype == torch.float64


def test_long_prompts_are_truncated_to_the_window(pipe):
    [sample] = generate_traced(pipe, [" ".join(["cat"] * 80)], [1], config(steps=1))
    prompt = sample.heat_map.prompt
    assert prompt.truncated and prompt.num_tokens_total == len(pipe.tokenizer.tokenize(prompt.prompt)) > 64
    assert len(prompt.tokens) == TINY_FLUX2_MAX_LENGTH - OFFSET - 1
    assert sample.heat_map.maps.shape[0] == TINY_FLUX2_MAX_LENGTH - OFFSET


def test_a_prompt_merging_with_the_template_is_refused(pipe):
    with pytest.raises(ValueError, match="merges with the chat template"):
        Flux2Architecture().tokenize(pipe, "\na cat")


def test_refusals_are_one_line(pipe):
    with pytest.raises(ValueError, match="Flux.2 takes no negative prompt"):
        generate_traced(pipe, PROMPTS[:1], [3], config(), negative_prompts=["blurry"])
    source = resolve_model_source("tiny-flux2-klein")
    family = family_of(source)
    for settings, match in [
        ({"negative_prompt": "blurry"}, "no negative prompt"),
        ({"concept_maps": True}, "concept stream is not wired"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            check_family_settings(family, (128, 128), (128, 128), None, False, source=source, **settings)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="flow matching"):
        check_family_settings(family, (128, 128), (128, 128), "ddim", False, source=source)
    with pytest.raises(ValueError, match="--no-refine"):
        check_family_settings(family, (128, 128), (128, 128), None, True, source=source)


# --- FLUX.2 [dev]: Mistral 3 with the pipeline's system message, embedded guidance -----------------


@pytest.fixture(scope="module")
def dev():
    return load_pipeline(ModelSpec("tiny-flux2", device="cpu"))


def _dev_text(dev, prompt: str) -> str:
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    return f"<s>[SYSTEM_PROMPT]{SYSTEM_MESSAGE}[/SYSTEM_PROMPT][INST]{prompt}[/INST]"


def test_dev_prompt_keys_follow_the_system_message(dev):
    architecture = architecture_of(dev)
    assert isinstance(architecture, Flux2DevArchitecture) and family_of(resolve_model_source("tiny-flux2")).name == FLUX2
    assert architecture.render(dev, PROMPTS[0]) == _dev_text(dev, PROMPTS[0])
    prefix = dev.tokenizer(_dev_text(dev, "")[: -len("[/INST]")], add_special_tokens=False).input_ids
    layout = architecture.text_layout(dev)
    assert layout.offset == len(prefix) > 30 and layout.max_tokens == TINY_FLUX2_DEV_MAX_LENGTH - layout.offset - 1
    prompt = architecture.tokenize(dev, PROMPTS[0])
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    # the pipeline's own tokenisation (``_get_mistral_3_small_prompt_embeds``)
    ids = dev.tokenizer.apply_chat_template(
        format_input([PROMPTS[0]]), add_generation_prompt=False, tokenize=True, return_dict=True,
        padding="max_length", truncation=True, max_length=TINY_FLUX2_DEV_MAX_LENGTH,
    )["input_ids"][0]
    n = len(prompt.tokens)
    assert ids[: layout.offset] == prefix and ids[layout.offset : layout.offset + n] == prompt.token_ids
    assert dev.tokenizer.convert_ids_to_tokens(ids[layout.offset + n]) == "[/INST]"  # the end row
    assert [w.word for w in prompt.words] == ["a", "hotdog", "on", "a", "Plate"]
    cleaned = architecture.tokenize(dev, "a hotdog[IMG] on a Plate")  # the pipeline drops [IMG]
    assert cleaned.token_ids == prompt.token_ids and cleaned.prompt == "a hotdog[IMG] on a Plate"


def test_dev_maps_equal_brute_force_softmax_of_the_prompt_keys(dev):
    offset = architecture_of(dev).text_layout(dev).offset
    _check(dev, config(4.0), offset=offset)  # embedded guidance: one call per step


def test_dev_images_are_the_pipelines_own_call(dev):
    [sample] = generate_traced(dev, PROMPTS[:1], [5], config(2.5))
    own = dev(prompt=PROMPTS[0], generator=[torch.Generator("cpu").manual_seed(5)], output_type="np", height=SIZE,
              width=SIZE, max_sequence_length=TINY_FLUX2_DEV_MAX_LENGTH, num_inference_steps=2, guidance_scale=2.5).images[0]
    assert np.array_equal(sample.image, own)
    with pytest.raises(ValueError, match="Flux.2 takes no negative prompt"):
        generate_traced(dev, PROMPTS[:1], [3], config(), negative_prompts=["blurry"])


def test_dev_folder_of_another_shape(tmp_path: Path):
    folder = tmp_path / "dev"
    build_tiny_flux2_pipeline(num_layers=2, num_single_layers=1, heads=4, head_dim=8).save_pretrained(folder)
    other = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert len(architecture_of(other).traced_modules(other.transformer)) == 3
    _check(other, config(), offset=architecture_of(other).text_layout(other).offset)

"""Qwen-Image on the built-in tiny-qwenimage: double-stream joint attention ([text, image], complex
RoPE, a key mask for batches of mixed prompt lengths), a chat-templated prompt of which only the
user prompt is mapped, CFG as two transformer calls. Maps against a brute-force fp64 softmax of the
conditional calls, images equal to the pipeline's own call, offsets and masks that matter, other
folder shapes, the family's refusals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

from tests.unit.test_flux import BruteForce
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.qwenimage import QwenImageArchitecture, template_tokens
from transforms.models.family import QWENIMAGE, check_family_settings, family_of
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_qwenimage import build_tiny_qwenimage_pipeline

SIZE = 64  # px: an 8x8 map grid (VAE factor 4 x 2x2 packing)
GRID = (SIZE // 8, SIZE // 8)
PROMPTS = ["a hotdog on a Plate, next to a red bicycle", "two cats"]  # different lengths: a key mask
SEEDS = [3, 4]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class QwenBruteForce(BruteForce):
    """The whole joint softmax in fp64 from each ``Attention``'s own projections, QK-norms and
    complex RoPE (image and text frequencies apart, text first), with the key mask the processor
    builds from ``encoder_hidden_states_mask``."""

    module_class = Attention

    def __init__(self, transformer, normalize: str = "all", heads: str = "mean", masked: bool = True) -> None:
        super().__init__(transformer, normalize, heads, masked, GRID)

    def joint_qk(self, module, kwargs):
        image_freqs, text_freqs = kwargs["image_rotary_emb"]

        def heads_of(linear, norm, x, freqs):
            x = norm(linear(x).unflatten(-1, (module.heads, -1))).double()
            return apply_rotary_emb_qwen(x, freqs, use_real=False)

        hidden, context = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        q = torch.cat([heads_of(module.add_q_proj, module.norm_added_q, context, text_freqs),
                       heads_of(module.to_q, module.norm_q, hidden, image_freqs)], 1)
        k = torch.cat([heads_of(module.add_k_proj, module.norm_added_k, context, text_freqs),
                       heads_of(module.to_k, module.norm_k, hidden, image_freqs)], 1)
        return q, k

    def mask_of(self, kwargs, q):
        text_mask = kwargs.get("encoder_hidden_states_mask")
        if text_mask is None:
            return None
        image = torch.ones(q.shape[0], q.shape[1] - text_mask.shape[1], dtype=torch.bool)
        return torch.cat([text_mask.bool(), image], 1)[:, None, None, :]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(ModelSpec("tiny-qwenimage", device="cpu"))


def config(guidance: float = 4.0, steps: int = 2, **trace) -> GenerationConfig:
    return GenerationConfig(steps=steps, height=SIZE, width=SIZE, guidance_scale=guidance, trace=TraceConfig(**trace))


def _expected(brute: QwenBruteForce, every: int, offset: int = 0) -> torch.Tensor:
    """The brute force's maps of every ``every``-th call from the prompt's first key on."""
    return brute.global_maps(every=every)[:, offset:].float()


def _check(pipe, generation: GenerationConfig, negatives=None, normalize: str = "all", heads: str = "mean",
           prompts=PROMPTS) -> list:
    brute = QwenBruteForce(pipe.transformer, normalize, heads)
    try:
        samples = generate_traced(pipe, prompts, SEEDS[: len(prompts)], generation, negative_prompts=negatives)
    finally:
        brute.close()
    cfg = negatives is not None and generation.guidance_scale > 1
    calls = len(next(iter(brute.calls.values())))
    assert calls == generation.steps * (2 if cfg else 1)  # CFG: a conditional and an unconditional call per step
    offset = architecture_of(pipe).text_layout(pipe).offset
    expected = _expected(brute, 2 if cfg else 1, offset)
    for i, sample in enumerate(samples):
        n = len(sample.heat_map.prompt.tokens)
        torch.testing.assert_close(sample.heat_map.maps, expected[i, : n + 1], rtol=0, atol=1e-5)
    if cfg:  # the check can fail: the unconditional calls' maps (on their own, shorter keys) are others
        unconditional = brute.global_maps(every=2, start=1)[:, offset:].float()
        keys = min(unconditional.shape[1], len(samples[0].heat_map.prompt.tokens) + 1)
        assert (unconditional[0, :keys] - samples[0].heat_map.maps[:keys]).abs().max() > 1e-3
    return samples


def test_architecture_geometry_and_template(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, QwenImageArchitecture)
    assert set(architecture.traced_modules(pipe.transformer).values()) == {"double"}
    assert len(architecture.traced_modules(pipe.transformer)) == 2
    source = resolve_model_source("tiny-qwenimage")
    assert family_of(source).name == QWENIMAGE and model_geometry(ModelSpec("tiny-qwenimage"), source) == (512, 512, 8)
    assert architecture.default_size(pipe) == (512, 512) and architecture.map_grid(pipe, SIZE, SIZE) == GRID
    # the tiny tokenizer counts the system part as Qwen's does: the pipeline's drop of 34 leaves the prompt first
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx == 34
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (0, 0, 511)


def test_prompt_tokens_and_words_from_the_templated_text(pipe, monkeypatch):
    tokens, first = template_tokens(pipe, PROMPTS[0])
    assert first == 34 and tokens == pipe.tokenizer.tokenize(PROMPTS[0])
    prompt = architecture_of(pipe).tokenize(pipe, PROMPTS[0])
    assert [w.word for w in prompt.words] == ["a", "hotdog", "on", "a", "Plate", ",", "next", "to", "a", "red", "bicycle"]
    assert prompt.tokens[:3] == ["a", "hot", "dog"] and prompt.spans(pipe.tokenizer, "plate") == [(5, 8)]
    # a template whose text runs into the prompt (``user a`` → ``Ġa`` straddles the edge) is refused
    monkeypatch.setattr(pipe, "prompt_template_encode", pipe.prompt_template_encode.replace("user\n{}", "user {}"))
    with pytest.raises(ValueError, match="merges with the chat template"):
        architecture_of(pipe).tokenize(pipe, "a cat")


@pytest.mark.parametrize("negatives", [["blurry", ""], None], ids=["cfg-two-calls", "no-negative-no-cfg"])
def test_maps_equal_brute_force_masked_softmax_of_the_conditional_calls(pipe, negatives):
    _check(pipe, config(), negatives)


@pytest.mark.parametrize("normalize, heads", [("text", "mean"), ("all", "max")])
def test_normalisation_and_head_max(pipe, normalize, heads):
    _check(pipe, config(joint_normalize=normalize, heads=heads), ["blurry", "blurry"], normalize, heads)


def test_the_key_mask_is_part_of_the_softmax(pipe):
    """Prompts of different lengths: the shorter one's padded keys are masked (without: other maps)."""
    samples = generate_traced(pipe, PROMPTS, SEEDS, config())
    brute = QwenBruteForce(pipe.transformer, masked=False)
    try:
        generate_traced(pipe, PROMPTS, SEEDS, config())
    finally:
        brute.close()
    n = len(samples[1].heat_map.prompt.tokens)
    assert (_expected(brute, 1)[1, : n + 1] - samples[1].heat_map.maps).abs().max() > 1e-3


def test_key_offsets_follow_the_pipelines_drop(pipe, monkeypatch):
    """Dropping 30 tokens leaves 4 template tokens before the prompt: its keys start at 4 (0 is wrong);
    a drop past the prompt's start is refused."""
    monkeypatch.setattr(pipe, "prompt_template_encode_start_idx", 30)
    assert architecture_of(pipe).text_layout(pipe).offset == 4
    brute = QwenBruteForce(pipe.transformer)
    try:
        [sample] = generate_traced(pipe, PROMPTS[:1], SEEDS[:1], config())
    finally:
        brute.close()
    n = len(sample.heat_map.prompt.tokens)
    torch.testing.assert_close(sample.heat_map.maps, _expected(brute, 1, 4)[0, : n + 1], rtol=0, atol=1e-5)
    assert (_expected(brute, 1, 0)[0, : n + 1] - sample.heat_map.maps).abs().max() > 1e-3
    monkeypatch.setattr(pipe, "prompt_template_encode_start_idx", 36)
    with pytest.raises(ValueError, match="would cut the prompt"):
        architecture_of(pipe).text_layout(pipe)


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_images_are_the_pipelines_own_call(pipe, negative):
    given = {} if negative is None else {"negative_prompt": negative}
    [sample] = generate_traced(pipe, PROMPTS[:1], [5], config(), negative_prompts=[negative])

    def own(seed: int) -> np.ndarray:
        return pipe(PROMPTS[0], generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", height=SIZE,
                    width=SIZE, num_inference_steps=2, true_cfg_scale=4.0, **given).images[0]

    assert np.array_equal(sample.image, own(5))  # the model's own kernel, with its mask, makes the output
    assert np.abs(own(6) - own(5)).max() > 1e-3


def test_batch_of_mixed_lengths_equals_single_runs(pipe):
    batch = generate_traced(pipe, PROMPTS, SEEDS, config())
    for sample, prompt, seed in zip(batch, PROMPTS, SEEDS):
        [alone] = generate_traced(pipe, [prompt], [seed], config())
        torch.testing.assert_close(sample.heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)
        np.testing.assert_allclose(sample.image, alone.image, rtol=0, atol=1e-5)


def test_images_per_prompt_with_mixed_lengths_equal_single_runs(pipe):
    """Two images per prompt: each gets its own prompt's key mask (diffusers 0.42's ``encode_prompt``
    tiles the mask in another order than the embeddings; the prompts are passed repeated instead)."""
    generation = GenerationConfig(steps=2, height=SIZE, width=SIZE, images_per_prompt=2)
    batch = generate_traced(pipe, PROMPTS, SEEDS, generation, negative_prompts=["blurry", "low quality, dark"])
    for p, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS)):
        alone = generate_traced(pipe, [prompt], [seed], generation, negative_prompts=[["blurry", "low quality, dark"][p]])
        for k in range(2):
            torch.testing.assert_close(batch[2 * p + k].heat_map.maps, alone[k].heat_map.maps, rtol=0, atol=1e-5)
            np.testing.assert_allclose(batch[2 * p + k].image, alone[k].image, rtol=0, atol=1e-5)


def test_folder_of_another_shape(tmp_path: Path):
    folder = tmp_path / "qwenimage"
    build_tiny_qwenimage_pipeline(num_layers=3, heads=2).save_pretrained(folder)
    pipe = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert len(architecture_of(pipe).traced_modules(pipe.transformer)) == 3
    _check(pipe, config(), ["blurry", "blurry"])


def test_guidance_arguments(pipe):
    architecture = architecture_of(pipe)
    generation = config(guidance=2.5)
    assert architecture.call_kwargs(generation, None, pipe) == {"max_sequence_length": 512, "true_cfg_scale": 2.5}
    assert architecture.call_kwargs(generation, ["x"], pipe)["negative_prompt"] == ["x"]
    distilled = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(guidance_embeds=True)))
    assert architecture.call_kwargs(generation, None, distilled) == {"max_sequence_length": 512, "guidance_scale": 2.5}
    with pytest.raises(ValueError, match="guidance-distilled"):
        architecture.call_kwargs(generation, ["x"], distilled)


def test_family_refusals_are_one_line():
    source = resolve_model_source("tiny-qwenimage")
    family = family_of(source)
    assert family.guidance_scale == 4.0
    with pytest.raises(ValueError, match="Qwen-Image's blocks"):
        check_family_settings(family, (512, 512), (512, 512), None, False, concept_maps=True, source=source)
    with pytest.raises(ValueError, match="flow matching"):
        check_family_settings(family, (512, 512), (512, 512), "ddim", False, source=source)
    with pytest.raises(ValueError, match="--no-refine"):
        check_family_settings(family, (512, 512), (512, 512), None, True, source=source)

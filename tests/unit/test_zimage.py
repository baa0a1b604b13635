"""Z-Image on the built-in tiny-zimage: the image-query → caption-key block of the joint
single-stream layers' softmax against a brute-force fp64 softmax (image first, padded caption
keys attended, the batch key mask, CFG batched [cond; uncond]), the prompt's key offset in the
chat-templated text, images equal to the pipeline's own call, batching, other folder shapes,
the family's refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.unit.test_flux import BruteForce
from transforms.attribution import GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.zimage import ZImageArchitecture
from transforms.models.family import ZIMAGE, check_family_settings, default_guidance, family_of, label_defaults
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_zimage import build_tiny_zimage_pipeline

SIZE = 32  # px: an 8x8 map grid (VAE factor 2 x 2x2 patches), 64 image tokens
GRID = (8, 8)
PROMPTS = ["a hotdog on a Plate", "two cats and a dog"]
# more than 32 caption tokens with the template: its CFG batch (and any batch with a short prompt) has a key mask
LONG = ("a red bicycle leaning against a brick wall next to a small wooden door under a bright blue sky "
        "with white clouds and a cat")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(ModelSpec("tiny-zimage", device="cpu"))


def config(guidance: float = 5.0, steps: int = 2, size: int = SIZE, **trace) -> GenerationConfig:
    return GenerationConfig(steps=steps, height=size, width=size, guidance_scale=guidance, trace=TraceConfig(**trace))


class ZImageBruteForce(BruteForce):
    """Hooks on every joint layer's attention that materialise its whole softmax in fp64 from the
    module's own projections, RMS QK-norms and complex RoPE (``freqs_cis``), with the ``(B, S)``
    key mask as the processor broadcasts it: image queries first, caption keys from the padded
    image on (pads and template tokens included). ``calls[name]``: ``(batch, h*w, keys)`` per call."""

    def __init__(self, transformer, grid=GRID, normalize: str = "all", heads: str = "mean", masked: bool = True):
        self.normalize, self.heads, self.masked, self.grid = normalize, heads, masked, grid
        self.calls: dict[str, list[torch.Tensor]] = {}
        self.num_heads, self.masks = 0, 0
        self.handles = [block.attention.register_forward_pre_hook(self._hook(f"layers.{i}"), with_kwargs=True)
                        for i, block in enumerate(transformer.layers)]

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            x = args[0].double()
            freqs = kwargs["freqs_cis"].to(torch.complex128)[:, :, None]

            def heads_of(linear, norm):
                y = F.linear(x, linear.weight.double()).unflatten(-1, (module.heads, -1))
                y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()
                return torch.view_as_real(torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous()) * freqs).flatten(3)

            q, k = heads_of(module.to_q, module.norm_q), heads_of(module.to_k, module.norm_k)
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5  # the full L x L matrix
            mask = kwargs.get("attention_mask")
            if mask is not None:
                self.masks += 1
                if self.masked:
                    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
            image = self.grid[0] * self.grid[1]
            text = image + (-image) % 32  # the image is padded to a multiple of 32
            probs = scores.softmax(-1)[..., text:] if self.normalize == "all" else scores[..., text:].softmax(-1)
            block = probs[:, :, :image]
            self.calls.setdefault(name, []).append(block.sum(1) if self.heads == "mean" else block.amax(1))
            self.num_heads = module.heads

        return hook


def template_offset(pipe) -> int:
    """Text keys before the prompt, found apart from the architecture: the template's prefix tokens."""
    return len(pipe.tokenizer("<|im_start|>user\n").input_ids)


def _check(pipe, prompts, seeds, generation: GenerationConfig, normalize="all", heads="mean", grid=GRID, masks=None):
    brute = ZImageBruteForce(pipe.transformer, grid, normalize, heads)
    try:
        samples = generate_traced(pipe, prompts, seeds, generation)
    finally:
        brute.close()
    assert len(next(iter(brute.calls.values()))) == generation.steps  # CFG is one batched call per step
    if masks is not None:
        assert bool(brute.masks) == masks
    expected = brute.global_maps()
    offset = template_offset(pipe)
    n = len(prompts)
    assert expected.shape[0] == (2 * n if generation.guidance_scale > 0 else n)
    for i, sample in enumerate(samples):
        rows = slice(offset, offset + len(sample.heat_map.prompt.tokens) + 1)
        torch.testing.assert_close(sample.heat_map.maps, expected[i, rows].float(), rtol=0, atol=1e-5)
    first = samples[0].heat_map.maps
    rows = slice(offset, offset + first.shape[0])
    if generation.guidance_scale > 0:  # [cond; uncond]: the second half is the negative's attention
        assert (expected[n, rows].float() - first).abs().max() > 1e-3
    shifted = slice(offset - 1, offset - 1 + first.shape[0])  # the offset matters
    assert (expected[0, shifted].float() - first).abs().max() > 1e-3
    return samples


def test_architecture_layout_and_geometry(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, ZImageArchitecture)
    assert architecture.traced_modules(pipe.transformer) == {"layers.0.attention.processor": "single",
                                                             "layers.1.attention.processor": "single"}
    source = resolve_model_source("tiny-zimage")
    assert family_of(source).name == ZIMAGE and default_guidance("tiny-zimage") == 5.0
    assert label_defaults("tiny-zimage") == {"label_maps": "daam", "refine": False, "threshold": 0.5}
    assert model_geometry(ModelSpec("tiny-zimage"), source) == (1024, 1024, 4)  # the pipeline's own 1024 px
    layout = architecture.text_layout(pipe)
    assert layout.offset == template_offset(pipe) == 3 and layout.prefix == 0  # as with Qwen3: <|im_start|> user \n
    suffix = len(pipe.tokenizer("<|im_end|>\n<|im_start|>assistant\n").input_ids)
    assert layout.max_tokens == 512 - 3 - suffix


def test_prompt_tokens_are_the_templated_texts(pipe):
    """The prompt's tokens and words come from the pipeline's own tokenisation of the templated text."""
    tokenized = architecture_of(pipe).tokenize(pipe, PROMPTS[0])
    text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=True)
    ids = pipe.tokenizer(text).input_ids
    assert tokenized.token_ids == ids[3 : 3 + len(tokenized.token_ids)]
    assert pipe.tokenizer.convert_ids_to_tokens(ids[3 + len(tokenized.token_ids)]) == "<|im_end|>"
    assert tokenized.tokens == ["a", "hot", "dog", "on", "a", "pla", "te"]
    assert [w.word for w in tokenized.words] == ["a", "hotdog", "on", "a", "Plate"]  # Ġ starts a word, case kept


@pytest.mark.parametrize("guidance", [5.0, 0.0], ids=["cfg-cond-first", "no-cfg"])
def test_maps_equal_brute_force_softmax(pipe, guidance):
    _check(pipe, PROMPTS, [3, 4], config(guidance), masks=False)


@pytest.mark.parametrize("normalize, heads", [("text", "mean"), ("all", "max")])
def test_normalisation_and_head_max(pipe, normalize, heads):
    _check(pipe, PROMPTS[:1], [3], config(joint_normalize=normalize, heads=heads), normalize, heads)


@pytest.mark.parametrize("guidance", [5.0, 0.0], ids=["cfg", "no-cfg"])
def test_key_mask_of_a_batch_is_part_of_the_softmax(pipe, guidance):
    """A prompt past 32 caption tokens beside a short one: the batch has a key mask (the short
    prompt's keys past its padded caption), applied as the kernel applies it; without it the short
    prompt's maps differ. An image whose tokens are not a multiple of 32 (12x12 = 144, padded to
    160) puts the caption after the image pads."""
    prompts = [PROMPTS[0], LONG]
    [short, _] = _check(pipe, prompts, [3, 4], config(guidance, size=48), grid=(12, 12), masks=True)
    brute = ZImageBruteForce(pipe.transformer, (12, 12), masked=False)
    try:
        generate_traced(pipe, prompts, [3, 4], config(guidance, size=48))
    finally:
        brute.close()
    offset, n = template_offset(pipe), short.heat_map.maps.shape[0]
    # the masked keys are zeros (key 0, score 0): a small but sure difference, 10x the tolerance
    assert (brute.global_maps()[0, offset : offset + n].float() - short.heat_map.maps).abs().max() > 1e-4


@pytest.mark.parametrize("guidance, negative", [(5.0, None), (5.0, "blurry"), (0.0, None)])
def test_images_are_the_pipelines_own_call(pipe, guidance, negative):
    given = {} if negative is None else {"negative_prompt": negative}
    [sample] = generate_traced(pipe, [LONG], [5], config(guidance), negative_prompts=[negative])

    def own(seed: int) -> np.ndarray:
        return pipe(LONG, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", height=SIZE,
                    width=SIZE, num_inference_steps=2, guidance_scale=guidance, **given).images[0]

    assert np.array_equal(sample.image, own(5))  # the model's own kernel, with its mask, makes the output
    assert np.abs(own(6) - own(5)).max() > 1e-3


def test_batch_equals_single_runs(pipe):
    prompts, seeds = [PROMPTS[0], LONG], [3, 4]
    batch = generate_traced(pipe, prompts, seeds, config())
    for sample, prompt, seed in zip(batch, prompts, seeds):
        [alone] = generate_traced(pipe, [prompt], [seed], config())
        torch.testing.assert_close(sample.heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)
        np.testing.assert_allclose(sample.image, alone.image, rtol=0, atol=1e-5)


def test_store_takes_the_first_half_of_a_conditional_first_batch():
    store = HeatMapStore(TraceConfig())
    store.begin(2, cfg=True, latent_size=(2, 2), conditional_first=True)
    assert store.conditional_rows("x", 4) == slice(0, 2)
    store.add_reduced("x", torch.arange(4.0)[:, None, None].expand(4, 4, 3), 1)
    assert store.sums["x"][:, 0, 0, 0].tolist() == [0.0, 1.0]
    store.begin(2, cfg=True, latent_size=(2, 2))
    assert store.conditional_rows("x", 4) == slice(2, 4)


def test_folder_of_another_shape(tmp_path: Path):
    folder = tmp_path / "zimage"
    build_tiny_zimage_pipeline(layers=3, refiner_layers=2, heads=4).save_pretrained(folder)
    pipe = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert len(architecture_of(pipe).traced_modules(pipe.transformer)) == 3 and pipe.transformer.n_heads == 4
    _check(pipe, PROMPTS, [3, 4], config())


def test_refusals_are_one_line(pipe):
    source = resolve_model_source("tiny-zimage")
    family = family_of(source)
    with pytest.raises(ValueError, match="no double-stream blocks"):
        check_family_settings(family, (32, 32), (1024, 1024), None, False, concept_maps=True, source=source)
    with pytest.raises(ValueError, match="flow matching"):
        check_family_settings(family, (32, 32), (1024, 1024), "ddim", False, source=source)
    with pytest.raises(ValueError, match="--no-refine"):
        check_family_settings(family, (32, 32), (1024, 1024), None, True, source=source)
    architecture = architecture_of(pipe)
    with pytest.raises(ValueError, match="512-token window"):
        architecture.tokenize(pipe, " ".join(["cat"] * 600))
    with pytest.raises(ValueError, match="chat template"):
        architecture.tokenize(pipe, "\na cat")  # its newline merges with the template's (one ``ĊĊ`` token)


def test_rows_match_words_by_the_word_rule(pipe):
    """Byte-level BPE pieces depend on case and on the space before them: a row's words are matched
    by the word rule (as for T5), never by re-tokenising the query."""
    from transforms.attribution.words import BYTE_LEVEL_SCHEME, row_spans, word_scheme

    tokenized = architecture_of(pipe).tokenize(pipe, "A Hotdog on a plate")
    row = {"words": [{"word": w.word, "start": w.start, "end": w.end} for w in tokenized.words],
           "tokens": tokenized.tokens, "token_ids": tokenized.token_ids}
    assert word_scheme(pipe.tokenizer) == BYTE_LEVEL_SCHEME
    assert row_spans(row, "hotdog", pipe.tokenizer) == [(1, 3)]  # ĠHot · dog: one word of two tokens
    assert row_spans(row, "plate", pipe.tokenizer) == row_spans(row, "plate") == [(5, 6)]


def test_bfloat16_images_are_the_pipelines_own_call():
    """In bfloat16 (the dtype Z-Image ships in), with a batch key mask: the recorder's output is still the model's."""
    pipe = load_pipeline(ModelSpec("tiny-zimage", device="cpu", dtype="bfloat16"))
    samples = generate_traced(pipe, [LONG, PROMPTS[0]], [3, 4], config())
    own = pipe([LONG, PROMPTS[0]], generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)], output_type="np",
               height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=5.0).images
    for sample, image in zip(samples, own):
        assert np.array_equal(sample.image, image) and torch.isfinite(sample.heat_map.maps).all()

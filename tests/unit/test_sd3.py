"""SD3 / SD3.5 attribution on the tiny SD3 model: exact joint-attention slices against a brute-force
full softmax, the fused output untouched, batching, T5 sentencepiece words, SD3.5-style and
T5-less folders."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0

from transforms.attribution import GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.sd3 import (
    MAX_SEQUENCE_LENGTH,
    DaamJointAttnProcessor,
    SD3Architecture,
)
from transforms.attribution.words import CLIP_SCHEME, SENTENCEPIECE_SCHEME
from transforms.models.loading import ModelSpec, load_pipeline
from transforms.models.tiny_sd3 import build_tiny_sd3_pipeline

SMALL = dict(steps=2, height=64, width=64, guidance_scale=7.0)
PROMPT = "A Hotdog, on a plate!"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    pipe = build_tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _saved(folder: Path, **variant: Any) -> Any:
    build_tiny_sd3_pipeline(**variant).save_pretrained(folder)
    return load_pipeline(ModelSpec(str(folder), device="cpu"))


@pytest.fixture(scope="module")
def sd35_pipe(tmp_path_factory):
    """An SD3.5-style folder: RMS qk-norm, dual attention in block 0, other block and head counts."""
    folder = tmp_path_factory.mktemp("sd35") / "model"
    return _saved(folder, num_layers=2, heads=2, qk_norm="rms_norm", dual_attention_layers=(0,))


@pytest.fixture(scope="module")
def clip_only_pipe(tmp_path_factory):
    """A folder saved with ``text_encoder_3=None``."""
    return _saved(tmp_path_factory.mktemp("no-t5") / "model", t5=False)


class BruteForceMaps:
    """Forward pre-hooks on each joint attention that rebuild its query and key from the module's
    own projections and norms and materialise the full ``L×L`` softmax in fp32."""

    def __init__(self, transformer: Any, names: list[str], trace: TraceConfig, cfg: bool) -> None:
        self.trace, self.cfg = trace, cfg
        self.sums: dict[str, torch.Tensor] = {}
        self.heads: dict[str, int] = {}
        modules = dict(transformer.named_modules())
        self.handles = [
            modules[n.removesuffix(".processor")].register_forward_pre_hook(partial(self._hook, n), with_kwargs=True)
            for n in names
        ]

    def _hook(self, name: str, module: Any, args: tuple, kwargs: dict) -> None:
        image, context = kwargs["hidden_states"], kwargs["encoder_hidden_states"]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (module.heads, -1)).transpose(1, 2)

        def normed(norm: Any, t: torch.Tensor) -> torch.Tensor:
            return t if norm is None else norm(t)

        q = torch.cat([normed(module.norm_q, split(module.to_q(image))),
                       normed(module.norm_added_q, split(module.add_q_proj(context)))], 2).float()
        k = torch.cat([normed(module.norm_k, split(module.to_k(image))),
                       normed(module.norm_added_k, split(module.add_k_proj(context)))], 2).float()
        probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (B, H, L, L)
        n_img = image.shape[1]
        block = probs[:, :, :n_img, n_img:]
        if self.trace.joint_normalize == "text":
            block = block / block.sum(-1, keepdim=True)
        reduced = block.sum(1) if self.trace.heads == "mean" else block.amax(1)
        if self.cfg:
            reduced = reduced[reduced.shape[0] // 2 :]
        self.sums[name] = self.sums.get(name, 0) + reduced
        self.heads[name] = module.heads if self.trace.heads == "mean" else 1

    def maps(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(images, keys, h, w)``: bicubic to the grid, clamped, mean over layer-heads."""
        total = 0
        for maps in self.sums.values():
            n, _, keys = maps.shape
            spatial = maps.transpose(1, 2).reshape(n, keys, *grid)
            total = total + F.interpolate(spatial, size=grid, mode="bicubic", align_corners=False).clamp(min=0)
        return total / sum(self.heads.values())

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _traced_and_brute(pipe: Any, prompts: list[str], config: GenerationConfig) -> tuple[list, torch.Tensor]:
    architecture = architecture_of(pipe)
    names = sorted(architecture.traced_modules(pipe.transformer))
    brute = BruteForceMaps(pipe.transformer, names, config.trace, config.uses_cfg)
    try:
        samples = generate_traced(pipe, prompts, list(range(len(prompts))), config)
    finally:
        brute.remove()
    height, width = config.height, config.width
    return samples, brute.maps(architecture.map_grid(pipe, height, width))


def _check_against_brute_force(pipe: Any, config: GenerationConfig, prompts: list[str]) -> None:
    samples, reference = _traced_and_brute(pipe, prompts, config)
    layout = architecture_of(pipe).text_layout(pipe)
    for i, sample in enumerate(samples):
        maps = sample.heat_map.maps
        assert maps.shape == (layout.prefix + len(sample.heat_map.prompt.tokens) + 1, 4, 4)
        assert torch.isfinite(maps).all() and (maps >= 0).all()
        expected = reference[i, layout.rows(len(sample.heat_map.prompt.tokens))]
        assert (expected - maps).abs().max().item() <= 1e-5
        assert maps.amax() > 10 * maps.amin()  # peaked: the check compares real structure, not zeros


@pytest.mark.parametrize(
    "trace",
    [TraceConfig(), TraceConfig(joint_normalize="text"), TraceConfig(heads="max"),
     TraceConfig(heads="max", joint_normalize="text")],
    ids=["all-mean", "text-mean", "all-max", "text-max"],
)
def test_maps_equal_brute_force_full_softmax(pipe, trace):
    _check_against_brute_force(pipe, GenerationConfig(**SMALL, trace=trace), [PROMPT, "a cat"])


def test_without_guidance_whole_batch_is_conditional(pipe):
    _check_against_brute_force(pipe, GenerationConfig(steps=2, height=64, width=64, guidance_scale=1.0), [PROMPT])


def test_text_normalisation_sums_to_one_over_text_keys(pipe):
    """Renormalised over the text keys, the maps of all text keys sum to the step count per pixel;
    the model's own softmax (over image keys too) gives every prompt row less."""
    config = GenerationConfig(**SMALL, trace=TraceConfig(joint_normalize="text"))
    samples, reference = _traced_and_brute(pipe, [PROMPT], config)
    torch.testing.assert_close(reference[0].sum(0), torch.full((4, 4), 2.0), rtol=0, atol=1e-4)
    [everything] = generate_traced(pipe, [PROMPT], [0], GenerationConfig(**SMALL))
    assert (everything.heat_map.maps.sum(0) < samples[0].heat_map.maps.sum(0)).all()


def _joint_attention(qk_norm: str | None, context_pre_only: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, added_kv_proj_dim=16, dim_head=8, heads=2, out_dim=16, bias=True,
                     context_pre_only=context_pre_only, qk_norm=qk_norm, eps=1e-6, processor=JointAttnProcessor2_0())


@pytest.mark.parametrize("qk_norm,context_pre_only", [(None, False), ("rms_norm", False), ("rms_norm", True)])
def test_processor_output_is_bit_identical_to_diffusers(qk_norm, context_pre_only):
    attn = _joint_attention(qk_norm, context_pre_only)
    image, text = torch.randn(3, 6, 16), torch.randn(3, 5, 16)
    expected = JointAttnProcessor2_0()(attn, image, text)
    store = HeatMapStore()
    store.begin(num_images=3, cfg=False, latent_size=(2, 3))
    got = DaamJointAttnProcessor(store, "joint", JointAttnProcessor2_0())(attn, image, text)
    for ours, theirs in zip(got, expected):
        assert torch.equal(ours, theirs)
    recorded = store.sums["joint"]
    assert recorded.shape == (3, 1, 6, 5) and store.counts["joint"] == 2
    assert (recorded.sum(-1) < 2).all()  # two heads' slices over text keys: part of each row's mass


def test_images_bit_identical_traced_and_untraced(pipe):
    config = GenerationConfig(**SMALL)
    [traced] = generate_traced(pipe, [PROMPT], [7], config)
    plain = pipe(PROMPT, height=64, width=64, num_inference_steps=2, guidance_scale=7.0,
                 generator=torch.Generator("cpu").manual_seed(7), output_type="np",
                 max_sequence_length=MAX_SEQUENCE_LENGTH).images[0]
    assert np.array_equal(traced.image, plain)


def test_unselected_steps_go_to_the_original_processor(pipe):
    """Steps outside ``step_range`` are not recorded (the maps of both halves add up to the whole)
    and run the model's processor (the images do not change)."""
    runs = [
        generate_traced(pipe, [PROMPT], [2], GenerationConfig(**SMALL, trace=TraceConfig(step_range=r)))[0]
        for r in (None, (0, 1), (1, None))
    ]
    whole, first, second = (s.heat_map.maps for s in runs)
    assert (whole - first - second).abs().max() <= 1e-6 and not torch.allclose(first, second)
    assert all(np.array_equal(s.image, runs[0].image) for s in runs[1:])


def test_batch_equals_single_runs(pipe):
    prompts = [PROMPT, "an armadillo eating watermelon", "a red bicycle"]
    config = GenerationConfig(**SMALL)
    batch = generate_traced(pipe, prompts, [3, 4, 5], config)
    [alone] = generate_traced(pipe, [prompts[1]], [4], config)
    assert (alone.heat_map.maps - batch[1].heat_map.maps).abs().max() <= 1e-5
    np.testing.assert_allclose(alone.image, batch[1].image, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0].heat_map.maps[1], batch[0].heat_map.maps[2])


def test_t5_tokens_are_the_words(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, SD3Architecture)
    tokenized = architecture.tokenize(pipe, PROMPT)
    assert tokenized.scheme == SENTENCEPIECE_SCHEME
    assert tokenized.tokens == ["a", "hot", "dog", ",", "on", "a", "plate", "!"]
    assert [(w.word, w.start, w.end) for w in tokenized.words] == [
        ("A", 0, 1), ("Hotdog", 1, 3), (",", 3, 4), ("on", 4, 5), ("a", 5, 6), ("plate", 6, 7), ("!", 7, 8),
    ]
    # the ids are the T5 keys' (after 77 CLIP positions), ``</s>`` right after the prompt
    assert tokenized.token_ids + [1] == pipe.tokenizer_3(PROMPT).input_ids
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (77, 0, MAX_SEQUENCE_LENGTH - 1)
    assert layout.rows(len(tokenized.tokens)) == slice(77, 77 + 9)


def test_word_maps_merge_sentencepiece_pieces(pipe):
    [sample] = generate_traced(pipe, ["a Hotdog and a hotdog, plate"], [0], GenerationConfig(**SMALL))
    heat_map = sample.heat_map
    spans = heat_map.prompt.spans(heat_map.tokenizer, "hotdog")
    assert len(spans) == 2 and all(end - start >= 2 for start, end in spans)  # both spellings, several pieces
    rows = [i for start, end in spans for i in range(start, end)]
    torch.testing.assert_close(heat_map.word_map("Hotdog"), heat_map.maps[rows].mean(0))
    n = len(heat_map.prompt.tokens)
    assert heat_map.prompt.spans(heat_map.tokenizer, "plate") == [(n - 1, n)]
    with pytest.raises(ValueError, match="not in the prompt's words"):
        heat_map.word_map("dog")


def test_long_prompt_truncated_to_the_t5_window(pipe):
    prompt = " ".join(["cat"] * 300)
    [sample] = generate_traced(pipe, [prompt], [0], GenerationConfig(**SMALL))
    assert sample.heat_map.prompt.truncated and len(sample.heat_map.prompt.tokens) == MAX_SEQUENCE_LENGTH - 1
    assert sample.heat_map.maps.shape == (MAX_SEQUENCE_LENGTH, 4, 4)  # 255 tokens + </s>


def test_sd35_style_folder_traces_joint_attention_only(sd35_pipe):
    transformer = sd35_pipe.transformer
    assert transformer.config.qk_norm == "rms_norm" and transformer.transformer_blocks[0].attn2 is not None
    assert sorted(SD3Architecture().traced_modules(transformer)) == [
        "transformer_blocks.0.attn.processor", "transformer_blocks.1.attn.processor",
    ]
    _check_against_brute_force(sd35_pipe, GenerationConfig(**SMALL), [PROMPT])


def test_folder_without_t5_maps_clip_tokens(clip_only_pipe):
    assert clip_only_pipe.text_encoder_3 is None
    architecture = architecture_of(clip_only_pipe)
    tokenized = architecture.tokenize(clip_only_pipe, PROMPT)
    assert tokenized.scheme == CLIP_SCHEME and tokenized.tokens == ["a", "hotdog", ",", "on", "a", "plate", "!"]
    layout = architecture.text_layout(clip_only_pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (1, 1, 75)
    _check_against_brute_force(clip_only_pipe, GenerationConfig(**SMALL), [PROMPT])


def test_map_grid_and_default_size(pipe):
    architecture = SD3Architecture()
    assert architecture.default_size(pipe) == (256, 256)
    assert architecture.map_grid(pipe, 256, 128) == (16, 8)
    kwargs = architecture.call_kwargs(GenerationConfig(guidance_scale=5.0), ["blurry"], pipe)
    assert kwargs == {"guidance_scale": 5.0, "negative_prompt": ["blurry"], "max_sequence_length": MAX_SEQUENCE_LENGTH}

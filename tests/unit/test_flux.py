"""Flux attribution on the built-in tiny-flux: the exact image → text slice of the joint softmax
(double- and single-stream blocks) against a brute-force full softmax, batching, images, words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

from transforms.attribution import CrossAttentionTracer, GenerationConfig, HeatMapStore, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.flux import DaamFluxAttnProcessor, FluxArchitecture
from transforms.models.loading import ModelSpec, load_pipeline, model_geometry
from transforms.models.tiny_flux import build_tiny_flux_pipeline

SIZE = 64  # px: a 16x16 map grid (VAE factor 2 x 2x2 packing)
GRID = (SIZE // 4, SIZE // 4)
PROMPTS = ["a hotdog on a Plate", "two cats and a dog", "a red bicycle, next to a wall"]
SEEDS = [3, 4, 5]


@pytest.fixture(scope="module")
def pipe(one_torch_thread):
    return load_pipeline(ModelSpec("tiny-flux", device="cpu"))


def config(steps: int = 2, **trace) -> GenerationConfig:
    return GenerationConfig(steps=steps, height=SIZE, width=SIZE, guidance_scale=3.5, trace=TraceConfig(**trace))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Flux's real-valued rotary embedding on ``[B, S, H, D]`` (pairs of channels), in ``dtype``."""
    x = x.to(dtype)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    return x * cos[None, :, None].to(dtype) + rotated * sin[None, :, None].to(dtype)


class BruteForce:
    """Hooks on every Flux attention that materialise the whole joint softmax in fp32 from the
    module's own projections, QK-norms and rotary embedding, and sum the image-query → text-key
    block of every call, per layer: ``calls[name]`` holds ``(batch, h*w, text keys)`` per call. An
    ``attention_mask`` the module gets (Chroma's) is applied as SDPA applies it. Other families
    subclass it with their module class(es), q/k and mask (``joint_qk``, ``mask_of``), map ``grid``
    and ``dtype``."""

    module_class: type | tuple[type, ...] = FluxAttention
    dtype = torch.float32

    def __init__(self, transformer, normalize: str, heads: str, masked: bool = True, grid=GRID) -> None:
        self.normalize, self.heads, self.masked, self.grid = normalize, heads, masked, grid
        self.calls: dict[str, list[torch.Tensor]] = {}
        self.num_heads = 0
        self.handles = [
            module.register_forward_pre_hook(self._hook(name), with_kwargs=True)
            for name, module in transformer.named_modules()
            if isinstance(module, self.module_class)
        ]

    def joint_qk(self, module, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint query and key ``[B, S, H, D]``, text first, as the module's processor builds them."""
        hidden, context = kwargs["hidden_states"], kwargs.get("encoder_hidden_states")
        cos, sin = kwargs["image_rotary_emb"]

        def heads_of(linear, norm, x):
            return norm(linear(x).unflatten(-1, (module.heads, -1)))

        q = heads_of(module.to_q, module.norm_q, hidden)
        k = heads_of(module.to_k, module.norm_k, hidden)
        if context is not None:
            q = torch.cat([heads_of(module.add_q_proj, module.norm_added_q, context), q], 1)
            k = torch.cat([heads_of(module.add_k_proj, module.norm_added_k, context), k], 1)
        return _rotate(q, cos, sin, self.dtype), _rotate(k, cos, sin, self.dtype)

    def mask_of(self, kwargs, q: torch.Tensor) -> torch.Tensor | None:
        """The attention mask the kernel gets (``None``: none)."""
        return kwargs.get("attention_mask")

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            q, k = self.joint_qk(module, kwargs)
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5  # the full L x L matrix
            mask = self.mask_of(kwargs, q)
            if mask is not None and self.masked:
                scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
            text = q.shape[1] - self.grid[0] * self.grid[1]
            probs = scores.softmax(-1) if self.normalize == "all" else scores[..., :text].softmax(-1)
            block = probs[:, :, text:, :text]
            reduced = block.sum(1) if self.heads == "mean" else block.amax(1)
            self.calls.setdefault(name, []).append(reduced)
            self.num_heads = module.heads

        return hook

    @property
    def sums(self) -> dict[str, torch.Tensor]:
        """Per layer, the sum over every call."""
        return {name: sum(calls) for name, calls in self.calls.items()}

    def global_maps(self, every: int = 1, start: int = 0) -> torch.Tensor:
        """DAAM's aggregation of every ``every``-th call from ``start`` (2: a step's first of two
        calls; 2 from 1: its second): bicubic to the grid, clamp, mean over layer-heads."""
        total = 0
        for maps in (sum(calls[start::every]) for calls in self.calls.values()):
            b, _, keys = maps.shape
            grid = maps.permute(0, 2, 1).reshape(b, keys, *self.grid)
            total = total + F.interpolate(grid, size=self.grid, mode="bicubic", align_corners=False).clamp(min=0)
        count = len(self.calls) * (self.num_heads if self.heads == "mean" else 1)
        return (total / count).float()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("normalize, heads", [("all", "mean"), ("text", "mean"), ("all", "max")])
def test_maps_equal_brute_force_joint_softmax(pipe, normalize, heads):
    brute = BruteForce(pipe.transformer, normalize, heads)
    try:
        samples = generate_traced(pipe, PROMPTS[:2], SEEDS[:2], config(joint_normalize=normalize, heads=heads))
    finally:
        brute.close()
    assert len(brute.sums) == 5  # 2 double + 3 single blocks
    expected = brute.global_maps()
    for i, sample in enumerate(samples):
        n = len(sample.heat_map.prompt.tokens)
        torch.testing.assert_close(sample.heat_map.maps, expected[i, : n + 1], rtol=0, atol=1e-5)


def test_single_stream_blocks_are_traced_and_originals_restored(pipe):
    before = {k: type(v) for k, v in pipe.transformer.attn_processors.items()}
    store = HeatMapStore(TraceConfig(joint_normalize="text"))
    tracer = CrossAttentionTracer(pipe.transformer, store, architecture=FluxArchitecture())
    assert set(tracer.modules.values()) == {"double", "single"}
    with tracer:
        assert all(isinstance(p, DaamFluxAttnProcessor) for p in pipe.transformer.attn_processors.values())
        store.begin(1, cfg=False, latent_size=GRID)
        pipe("a cat", height=SIZE, width=SIZE, num_inference_steps=2, max_sequence_length=64,
             callback_on_step_end=lambda *a: (store.next_step(), a[-1])[1])
    assert {k: type(v) for k, v in pipe.transformer.attn_processors.items()} == before
    names = store.layer_names()
    assert sum(n.startswith("transformer_blocks.") for n in names) == 2
    assert sum(n.startswith("single_transformer_blocks.") for n in names) == 3
    for name in names:  # over text keys only, each head's row sums to one, twice (two steps)
        torch.testing.assert_close(store.sums[name].sum(-1), torch.full((1, 1, GRID[0] * GRID[1]), 2.0 * 2))


def test_maps_shape_finite_non_negative_and_at_most_one(pipe):
    [sample] = generate_traced(pipe, PROMPTS[2:], SEEDS[2:], GenerationConfig(steps=2, height=64, width=96))
    maps = sample.heat_map.maps
    n = len(sample.heat_map.prompt.tokens)
    assert maps.shape == (n + 1, 16, 24) and sample.image.shape == (64, 96, 3)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert maps.std(dim=(1, 2)).min() > 0  # the maps have structure, not constants
    assert maps.sum(0).max() < 2.0  # text keys hold a part of each query's mass (2 steps)


def test_batch_equals_single_runs(pipe):
    batch = generate_traced(pipe, PROMPTS, SEEDS, config())
    for i, prompt in enumerate(PROMPTS):
        [single] = generate_traced(pipe, [prompt], [SEEDS[i]], config())
        torch.testing.assert_close(single.heat_map.maps, batch[i].heat_map.maps, rtol=0, atol=1e-5)
        np.testing.assert_allclose(single.image, batch[i].image, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0].heat_map.maps[:4], batch[1].heat_map.maps[:4])


def test_images_are_bit_identical_traced_and_untraced(pipe):
    [sample] = generate_traced(pipe, PROMPTS[:1], SEEDS[:1], config())
    plain = pipe(PROMPTS[:1], height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=3.5, max_sequence_length=64,
                 generator=[torch.Generator("cpu").manual_seed(SEEDS[0])], output_type="np").images[0]
    assert np.array_equal(sample.image, plain)


def test_processor_output_equals_flux_processor_on_bare_modules():
    torch.manual_seed(0)
    double = FluxAttention(query_dim=16, heads=2, dim_head=8, added_kv_proj_dim=16, out_dim=16, bias=True)
    single = FluxAttention(query_dim=16, heads=2, dim_head=8, out_dim=16, bias=True, pre_only=True)
    image, text = torch.randn(2, 6, 16), torch.randn(2, 3, 16)
    rotary = (torch.randn(9, 8), torch.randn(9, 8))
    store = HeatMapStore()
    store.begin(2, cfg=False, latent_size=(2, 3))
    for name, attn, args in [("d", double, (image, text)), ("s", single, (torch.cat([text, image], 1), None))]:
        expected = FluxAttnProcessor()(attn, *args, None, rotary)
        got = DaamFluxAttnProcessor(store, name, FluxAttnProcessor())(attn, *args, None, rotary)
        for a, b in zip(expected if isinstance(expected, tuple) else [expected], got if isinstance(got, tuple) else [got]):
            assert torch.equal(a, b)
        assert store.sums[name].shape == (2, 1, 6, 3)  # (images, one group of summed heads, h*w, text keys)


def test_words_are_t5_pieces_with_their_spans(pipe):
    [sample] = generate_traced(pipe, PROMPTS[:1], SEEDS[:1], config(steps=1))
    prompt = sample.heat_map.prompt
    assert prompt.scheme == "sentencepiece" and prompt.tokens == ["a", "hot", "dog", "on", "a", "p", "late"]
    assert [(w.word, w.start, w.end) for w in prompt.words] == [
        ("a", 0, 1), ("hotdog", 1, 3), ("on", 3, 4), ("a", 4, 5), ("Plate", 5, 7)
    ]
    # the token ids are the T5 keys the pipeline encodes, then its </s> (the last global-map row)
    ids = pipe.tokenizer_2(PROMPTS[0]).input_ids
    assert ids[:-1] == prompt.token_ids and pipe.tokenizer_2.convert_ids_to_tokens(ids[-1]) == "</s>"
    maps = sample.heat_map.maps
    assert sample.heat_map.prefix == 0 and maps.shape[0] == len(prompt.tokens) + 1
    torch.testing.assert_close(sample.heat_map.word_map("hotdog"), maps[1:3].mean(0))
    torch.testing.assert_close(sample.heat_map.word_map("plate"), maps[5:7].mean(0))
    torch.testing.assert_close(sample.heat_map.word_map("a"), maps[[0, 4]].mean(0))


def test_long_prompts_are_truncated_to_the_t5_window(pipe):
    layout = FluxArchitecture().text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (0, 0, 63)
    [sample] = generate_traced(pipe, [" ".join(["cat"] * 80)], [1], config(steps=1))
    assert sample.heat_map.prompt.truncated and sample.heat_map.maps.shape[0] == 64


def test_negative_prompts_are_refused(pipe):
    with pytest.raises(ValueError, match="Flux takes no negative prompt"):
        generate_traced(pipe, PROMPTS[:2], SEEDS[:2], config(), negative_prompts=[None, "blurry"])
    generate_traced(pipe, PROMPTS[:1], SEEDS[:1], config(steps=1), negative_prompts=[None])  # none given: fine


def test_geometry_is_the_pipelines_own(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, FluxArchitecture) and not architecture.uses_cfg(config())
    assert architecture.default_size(pipe) == (256, 256)  # FluxPipeline: 128 latents x VAE factor 2
    assert architecture.map_grid(pipe, 64, 96) == (16, 24)
    assert model_geometry(ModelSpec("tiny-flux")) == (256, 256, 4)  # the driver agrees: 4 px per map cell


def test_folder_with_other_block_and_head_counts(tmp_path, one_torch_thread):
    folder = tmp_path / "flux"
    build_tiny_flux_pipeline(num_layers=1, num_single_layers=2, heads=4, head_dim=8, max_length=32).save_pretrained(folder)
    other = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert FluxArchitecture().traced_modules(other.transformer) == {
        "transformer_blocks.0.attn.processor": "double",
        "single_transformer_blocks.0.attn.processor": "single",
        "single_transformer_blocks.1.attn.processor": "single",
    }
    brute = BruteForce(other.transformer, "all", "mean")
    try:
        [sample] = generate_traced(other, PROMPTS[1:2], SEEDS[1:2], config())
    finally:
        brute.close()
    n = len(sample.heat_map.prompt.tokens)
    assert brute.num_heads == 4 and FluxArchitecture().text_layout(other).max_tokens == 31
    torch.testing.assert_close(sample.heat_map.maps, brute.global_maps()[0, : n + 1], rtol=0, atol=1e-5)

"""ConceptAttention on the built-in tiny-flux and tiny-sd3: the maps equal a brute-force concept
stream (an explicit loop over the double-stream blocks, full softmax, fp32), images and DAAM maps
are unchanged, batches equal single runs, multi-piece concepts keep every piece, and the
selection of blocks and steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.concepts import content_words
from transforms.attribution.config import ConceptConfig
from transforms.models.loading import ModelSpec, load_pipeline
from transforms.models.tiny_flux import build_tiny_flux_pipeline
from transforms.models.tiny_sd3 import build_tiny_sd3_pipeline

PROMPTS = ["a skyscraper near a red bicycle", "two cats and a dog on grass"]
SEEDS = [5, 6]
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def flux():
    return load_pipeline(ModelSpec("tiny-flux", device="cpu"))


@pytest.fixture(scope="module")
def sd3():
    return load_pipeline(ModelSpec("tiny-sd3", device="cpu"))


def config(pipe, concepts: ConceptConfig | None = ConceptConfig(), steps: int = 2, **trace) -> GenerationConfig:
    guidance = 3.5 if architecture_of(pipe).name == "flux" else 5.0
    return GenerationConfig(steps=steps, height=SIZE, width=SIZE, guidance_scale=guidance,
                            trace=TraceConfig(**trace), concepts=concepts)


def _rotate(x: torch.Tensor, rotary) -> torch.Tensor:
    """Flux's real rotary embedding on ``[B, S, H, D]``, fp32."""
    cos, sin = (t.float()[None, :, None] for t in rotary)
    pairs = x.float().unflatten(-1, (-1, 2))
    return x.float() * cos + torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2) * sin


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[S, H, D]`` queries over ``[T, H, D]`` keys: the full softmax, fp32, heads flattened."""
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) / q.shape[-1] ** 0.5
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.float()).flatten(1)


class BruteForceConcepts:
    """Records every double-stream block's inputs during generation, then runs the concept
    stream of image ``i`` by hand: text-stream weights, attention over [concepts; image] with a
    full softmax, the image's own joint-attention output before projection, dot products, softmax
    over concepts, mean over the selected blocks and steps."""

    def __init__(self, pipe, family: str, cfg: bool) -> None:
        self.pipe, self.family, self.cfg = pipe, family, cfg
        self.transformer = pipe.transformer
        self.calls: list[dict] = []  # per transformer call: its kwargs and each block's inputs
        self.handles = [self.transformer.register_forward_pre_hook(self._call, with_kwargs=True)]
        for b, block in enumerate(self.transformer.transformer_blocks):
            self.handles.append(block.register_forward_pre_hook(self._block(b), with_kwargs=True))

    def _call(self, module, args, kwargs):
        self.calls.append({"kwargs": kwargs, "blocks": {}})

    def _block(self, b):
        def hook(module, args, kwargs):
            self.calls[-1]["blocks"][b] = {k: v for k, v in kwargs.items()}
        return hook

    def close(self):
        for h in self.handles:
            h.remove()

    def features(self, name: str) -> torch.Tensor:
        """The name encoded alone; the rows of all its word-tokenizer pieces."""
        pipe = self.pipe
        if self.family == "flux":
            embeds, _, _ = pipe.encode_prompt(prompt=[name], prompt_2=None, max_sequence_length=64)
            pieces = len(pipe.tokenizer_2(name).input_ids) - 1  # without </s>
            return embeds[0, :pieces]
        embeds, _, _, _ = pipe.encode_prompt(prompt=[name], prompt_2=[name], prompt_3=[name],
                                             do_classifier_free_guidance=False, max_sequence_length=256)
        pieces = len(pipe.tokenizer_3(name).input_ids) - 1
        return embeds[0, 77 : 77 + pieces]

    def maps(self, image: int, names: list[str], blocks: list[int], steps: list[int], grid,
             space: str = "output") -> torch.Tensor:
        pieces = [self.features(n) for n in names]
        groups = torch.tensor([k for k, p in enumerate(pieces) for _ in range(p.shape[0])])
        total, count = 0, 0
        for step in steps:
            call = self.calls[step]
            kw = call["kwargs"]
            concepts = self.transformer.context_embedder(torch.cat(pieces)[None])
            for b in range(max(blocks) + 1):
                block = self.transformer.transformer_blocks[b]
                inputs = call["blocks"][b]
                batch = inputs["hidden_states"].shape[0]
                row = batch // 2 + image if self.cfg else image  # CFG: [unconditional; conditional]
                temb = inputs["temb"]
                if self.family == "flux":
                    t = kw["timestep"] * 1000
                    g = kw["guidance"] * 1000
                    c_emb = self.transformer.time_text_embed(t, g, torch.zeros_like(kw["pooled_projections"]))[row : row + 1]
                else:
                    c_emb = temb[row : row + 1]
                attn = block.attn
                heads = attn.heads
                x = inputs["hidden_states"][row : row + 1]
                ctx = inputs["encoder_hidden_states"][row : row + 1]
                img_normed = block.norm1(x, emb=temb[row : row + 1])[0]
                if getattr(block, "context_pre_only", False):
                    ctx_normed = block.norm1_context(ctx, temb[row : row + 1])
                    c_out = (block.norm1_context(concepts, c_emb),)
                else:
                    ctx_normed = block.norm1_context(ctx, emb=temb[row : row + 1])[0]
                    c_out = block.norm1_context(concepts, emb=c_emb)
                c_normed = c_out[0]

                def heads_of(linear, norm, states):
                    h = linear(states).unflatten(-1, (heads, -1))[0]
                    return h if norm is None else norm(h)

                iq = heads_of(attn.to_q, attn.norm_q, img_normed)
                ik = heads_of(attn.to_k, attn.norm_k, img_normed)
                iv = attn.to_v(img_normed).unflatten(-1, (heads, -1))[0]
                tq = heads_of(attn.add_q_proj, attn.norm_added_q, ctx_normed)
                tk = heads_of(attn.add_k_proj, attn.norm_added_k, ctx_normed)
                tv = attn.add_v_proj(ctx_normed).unflatten(-1, (heads, -1))[0]
                if self.family == "flux":  # text first, rotary on the whole sequence
                    rotary = inputs["image_rotary_emb"]
                    q = _rotate(torch.cat([tq, iq])[None], rotary)[0]
                    k = _rotate(torch.cat([tk, ik])[None], rotary)[0]
                    v = torch.cat([tv, iv])
                    span = slice(tq.shape[0], None)
                else:
                    q, k, v = torch.cat([iq, tq]), torch.cat([ik, tk]), torch.cat([iv, tv])
                    span = slice(0, iq.shape[0])
                image_vectors = _softmax_attention(q[span], k, v)
                cq = heads_of(attn.add_q_proj, attn.norm_added_q, c_normed)
                ck = heads_of(attn.add_k_proj, attn.norm_added_k, c_normed)
                cv = attn.add_v_proj(c_normed).unflatten(-1, (heads, -1))[0]
                concept_vectors = _softmax_attention(cq, torch.cat([ck.float(), k[span]]), torch.cat([cv.float(), v[span]]))
                if b in blocks:
                    if space == "output":
                        dots = concept_vectors @ image_vectors.T
                    else:  # the paper's baseline: image queries . concept keys, before the rotation
                        dots = ck.flatten(1).float() @ iq.flatten(1).float().T
                    per_concept = torch.stack([dots[groups == c].mean(0) for c in range(len(names))])
                    total = total + per_concept.softmax(0)
                    count += 1
                if len(c_out) > 1:
                    gate_msa, shift_mlp, scale_mlp, gate_mlp = c_out[1:]
                    concepts = concepts + gate_msa[:, None] * attn.to_add_out(concept_vectors[None])
                    normed = block.norm2_context(concepts) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
                    concepts = concepts + gate_mlp[:, None] * block.ff_context(normed)
        return (total / count).reshape(len(names), *grid)


@pytest.mark.parametrize("space", ["output", "cross-attention"])
@pytest.mark.parametrize("family, blocks, selected", [("flux", (1, 4), [1, 2, 3]), ("sd3", (2, None), [2, 3, 4])])
def test_concept_maps_equal_brute_force_stream(family, blocks, selected, space):
    """Five double-stream blocks: Flux's selection leaves a block out before and after it; SD3's
    ends on the last block, whose text stream stops there (``context_pre_only``)."""
    if family == "flux":
        pipe = build_tiny_flux_pipeline(num_layers=5, num_single_layers=1)
    else:
        pipe = build_tiny_sd3_pipeline(num_layers=5)
    pipe.set_progress_bar_config(disable=True)
    gen = config(pipe, ConceptConfig(blocks=blocks, step_range=(1, None), space=space), steps=3)
    brute = BruteForceConcepts(pipe, family, cfg=family == "sd3" and gen.uses_cfg)
    try:
        samples = generate_traced(pipe, PROMPTS, SEEDS, gen)
    finally:
        brute.close()
    assert len(brute.calls) == 3
    with torch.no_grad():
        for i, sample in enumerate(samples):
            grid = tuple(sample.concept_maps.shape[-2:])
            expected = brute.maps(i, sample.concepts, selected, [1, 2], grid, space)
            torch.testing.assert_close(sample.concept_maps, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_images_and_daam_maps_unchanged_batch_invariant(family, flux, sd3):
    pipe = flux if family == "flux" else sd3
    plain = generate_traced(pipe, PROMPTS, SEEDS, config(pipe, None))
    batch = generate_traced(pipe, PROMPTS, SEEDS, config(pipe))
    for i, (a, b) in enumerate(zip(plain, batch)):
        assert np.array_equal(a.image, b.image)
        assert torch.equal(a.heat_map.maps, b.heat_map.maps)
        maps = b.concept_maps
        assert maps.shape == (len(b.concepts), *a.heat_map.maps.shape[-2:])
        assert torch.isfinite(maps).all() and (maps >= 0).all()
        torch.testing.assert_close(maps.sum(0), torch.ones(maps.shape[1:]), rtol=0, atol=1e-5)  # softmax over concepts
        [single] = generate_traced(pipe, [PROMPTS[i]], [SEEDS[i]], config(pipe))
        assert single.concepts == b.concepts
        torch.testing.assert_close(single.concept_maps, maps, rtol=0, atol=1e-5)
    assert batch[0].concepts == ["skyscraper", "red", "bicycle"]
    assert batch[1].concepts == ["cats", "dog", "grass"]


def test_multi_piece_concepts_keep_every_piece(flux):
    """A concept of several T5 pieces is not its first piece alone: its map differs from the map
    of that first piece given as the concept."""
    pieces = flux.tokenizer_2.tokenize("skyscraper")
    assert len(pieces) > 1
    first = flux.tokenizer_2.convert_tokens_to_string(pieces[:1]).strip()
    whole = generate_traced(flux, PROMPTS[:1], SEEDS[:1], config(flux, ConceptConfig(concepts=("skyscraper", "bicycle"))))
    head = generate_traced(flux, PROMPTS[:1], SEEDS[:1], config(flux, ConceptConfig(concepts=(first, "bicycle"))))
    assert whole[0].concepts == ["skyscraper", "bicycle"]
    assert not torch.allclose(whole[0].concept_maps, head[0].concept_maps, atol=1e-4)


def test_selection_and_errors(flux, tiny_pipe):
    assert ConceptConfig().block_indices(19) == [15, 16, 17, 18]  # the official layers of FLUX.1
    assert ConceptConfig().block_indices(2) == [0, 1]
    assert ConceptConfig(blocks=(1, None)).block_indices(3) == [1, 2]
    with pytest.raises(ValueError, match="select none"):
        ConceptConfig(blocks=(5, 9)).block_indices(2)
    with pytest.raises(ValueError, match="empty"):
        ConceptConfig(concepts=(" ", ""))
    early = generate_traced(flux, PROMPTS[:1], SEEDS[:1], config(flux, ConceptConfig(step_range=(0, 1))))
    late = generate_traced(flux, PROMPTS[:1], SEEDS[:1], config(flux, ConceptConfig(step_range=(1, 2))))
    assert not torch.allclose(early[0].concept_maps, late[0].concept_maps)
    with pytest.raises(ValueError, match="joint-attention"):
        generate_traced(tiny_pipe, ["a cat"], [0], GenerationConfig(steps=1, height=64, width=64, concepts=ConceptConfig()))


def test_content_words_and_configured_concepts(flux):
    tokenized = architecture_of(flux).tokenize(flux, "The Cat and the cat on a mat, 3 dogs")
    assert content_words(tokenized) == ["Cat", "mat", "dogs"]
    [sample] = generate_traced(flux, ["only function words: a the of"], [0], config(flux, ConceptConfig(concepts=("sky",))))
    assert sample.concepts == ["sky"] and torch.equal(sample.concept_maps, torch.ones_like(sample.concept_maps))


def test_concept_encodings_are_reused_per_pipeline(flux, monkeypatch):
    """A name is encoded once per pipeline; later tables hold the same features without calling
    the text encoders again, and the cache drops the least recently used names past its size."""
    from transforms.attribution import concepts as module

    architecture = architecture_of(flux)
    calls = []
    original = type(architecture).concept_embeddings

    def counted(self, pipe, names):
        calls.append(list(names))
        return original(self, pipe, names)

    monkeypatch.setattr(type(architecture), "concept_embeddings", counted)
    module._CACHES.pop(flux, None)
    first = module.encode_concepts(architecture, flux, ["zebra", "hotdog"])
    again = module.encode_concepts(architecture, flux, ["hotdog", "kite"])
    assert calls == [["zebra", "hotdog"], ["kite"]]
    assert torch.equal(first["hotdog"], again["hotdog"])
    monkeypatch.setattr(module, "CONCEPT_CACHE", 2)
    module.encode_concepts(architecture, flux, ["kite"])
    assert list(module._CACHES[flux]) == ["hotdog", "kite"]  # zebra, the least recently used, left

"""Self-attention affinity capture and segmentation in ``generate_traced`` on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.attribution import (
    AffinityStore,
    CrossAttentionTracer,
    DaamSelfAttnProcessor,
    GenerationConfig,
    HeatMapStore,
    SegmentationConfig,
    generate_traced,
    segment_sample,
)
from transforms.attribution.classes import ClassVocabulary
from transforms.attribution.store import infer_factor

SIZE = dict(height=128, width=128)  # latent 16x16: the factor-2 layers have an 8x8 grid, Q = 64
VOCABULARY = ClassVocabulary(("cat", "dog", "sofa"))


def traced_with_affinity(pipe, prompts, seeds, config, factor=2):
    """A traced generation by hand (as ``generate_traced`` does it), with the brute-force affinity:
    fp64 ``softmax(q kᵀ / sqrt(d))`` of every attn1 call at ``factor``, conditional half, mean over
    heads, steps and layers, from forward pre-hooks on the modules themselves."""
    store = HeatMapStore(config.trace)
    latent = (config.height // 8, config.width // 8)
    n = len(prompts)
    store.begin(n, config.uses_cfg, latent)
    affinity = AffinityStore(store, factor)
    brute: list[torch.Tensor] = []

    def hook(attn, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).double()
        if infer_factor(hidden.shape[1], *latent)[0] != factor:
            return
        hidden = hidden[n:] if config.uses_cfg else hidden
        q = torch.nn.functional.linear(hidden, attn.to_q.weight.double())
        k = torch.nn.functional.linear(hidden, attn.to_k.weight.double())
        d = q.shape[-1] // attn.heads
        q = q.view(n, -1, attn.heads, d).transpose(1, 2)
        k = k.view(n, -1, attn.heads, d).transpose(1, 2)
        brute.append(torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1).mean(1))

    handles = [
        module.register_forward_pre_hook(hook, with_kwargs=True)
        for name, module in pipe.unet.named_modules()
        if name.endswith("attn1")
    ]

    def on_step(_pipe, _step, _t, tensors):
        store.next_step()
        return tensors

    try:
        with CrossAttentionTracer(pipe.unet, store, affinity):
            pipe(list(prompts), num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                 height=config.height, width=config.width, output_type="np", callback_on_step_end=on_step,
                 generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
    finally:
        for handle in handles:
            handle.remove()
    return store, affinity.affinity(), torch.stack(brute).mean(0)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_affinity_equals_brute_force(tiny_pipe, guidance):
    config = GenerationConfig(steps=3, guidance_scale=guidance, **SIZE)
    _, captured, brute = traced_with_affinity(tiny_pipe, ["a cat on a sofa", "a dog"], [3, 4], config)
    assert captured.shape == (2, 64, 64) and captured.dtype == torch.float32
    error = (captured.double() - brute).abs().max().item()
    assert error <= 1e-5, error
    torch.testing.assert_close(captured.sum(-1), torch.ones(2, 64), rtol=0, atol=1e-5)
    assert not torch.allclose(captured[0], captured[1])  # kept apart per image


def test_another_fallback_processor_gets_the_same_affinity_and_output(tiny_pipe):
    """Self-attention modules whose own processor is not ``AttnProcessor2_0`` (here diffusers'
    ``AttnProcessor``) keep it for the output; the probabilities are recomputed beside it."""
    from diffusers.models.attention_processor import AttnProcessor

    config = GenerationConfig(steps=2, **SIZE)
    prompts, seeds = ["a cat on a sofa"], [7]
    fused = generate_traced(tiny_pipe, prompts, seeds, config, segmentation=SegmentationConfig(VOCABULARY))
    _, fused_affinity, _ = traced_with_affinity(tiny_pipe, prompts, seeds, config)
    original = dict(tiny_pipe.unet.attn_processors)
    tiny_pipe.unet.set_attn_processor({name: AttnProcessor() if "attn1" in name else proc for name, proc in original.items()})
    try:
        [plain] = generate_traced(tiny_pipe, prompts, seeds, config)
        [other] = generate_traced(tiny_pipe, prompts, seeds, config, segmentation=SegmentationConfig(VOCABULARY))
        _, other_affinity, brute = traced_with_affinity(tiny_pipe, prompts, seeds, config)
    finally:
        tiny_pipe.unet.set_attn_processor(original)
    assert np.array_equal(other.image, plain.image)  # the module's own processor made the output
    torch.testing.assert_close(other_affinity, fused_affinity, rtol=0, atol=1e-5)
    assert (other_affinity.double() - brute).abs().max().item() <= 1e-5
    np.testing.assert_allclose(other.segmentation.class_maps, fused[0].segmentation.class_maps, rtol=0, atol=1e-4)


def test_refinement_in_generate_uses_the_captured_affinity(tiny_pipe):
    config = GenerationConfig(steps=2, **SIZE)
    segmentation = SegmentationConfig(VOCABULARY)
    store, captured, _ = traced_with_affinity(tiny_pipe, ["a cat on a sofa"], [5], config)
    [sample] = generate_traced(tiny_pipe, ["a cat on a sofa"], [5], config, segmentation=segmentation)
    seg = sample.segmentation
    expected = segment_sample(seg.prompt, seg.matches, sample.heat_map.token_maps, (128, 128), 0.6, 0.5,
                              captured[0], (8, 8), segmentation.power)
    np.testing.assert_allclose(seg.class_maps, expected.class_maps, rtol=0, atol=1e-5)
    assert seg.labels == [1, 3] and seg.class_maps.shape == (2, 16, 16)
    assert seg.label_map.shape == (128, 128) and set(np.unique(seg.label_map)) <= {0, 1, 3, 255}
    assert [q.label for q in seg.quality] == [1, 3] and all(0 <= q.agreement <= 1 for q in seg.quality)


def test_capture_keeps_the_fused_output(tiny_pipe):
    config = GenerationConfig(steps=2, **SIZE)
    prompts, seeds = ["a cat and a dog", "a sofa"], [1, 2]
    plain = generate_traced(tiny_pipe, prompts, seeds, config)
    refined = generate_traced(tiny_pipe, prompts, seeds, config, segmentation=SegmentationConfig(VOCABULARY))
    unrefined = generate_traced(tiny_pipe, prompts, seeds, config, segmentation=SegmentationConfig(VOCABULARY, refine=False))
    for a, b, c in zip(plain, refined, unrefined):
        assert a.segmentation is None
        assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
        assert torch.equal(a.heat_map.maps, b.heat_map.maps) and torch.equal(a.heat_map.maps, c.heat_map.maps)
        assert c.segmentation.quality[0].agreement is None
    assert not np.allclose(refined[0].segmentation.class_maps, unrefined[0].segmentation.class_maps)


def test_tracer_with_affinity_restores_processors(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    store = HeatMapStore()
    with CrossAttentionTracer(tiny_pipe.unet, store, AffinityStore(store, 2)):
        probed = [k for k, v in tiny_pipe.unet.attn_processors.items() if isinstance(v, DaamSelfAttnProcessor)]
        assert probed == [
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor",
            "up_blocks.2.attentions.0.transformer_blocks.0.attn1.processor",
            "up_blocks.2.attentions.1.transformer_blocks.0.attn1.processor",
        ]
    assert tiny_pipe.unet.attn_processors == before


def test_segmentation_batch_invariance(tiny_pipe):
    """Default recipe (``A^4``): the random model's near-uniform self-attention leaves almost flat
    maps; those label no pixel (``class_maps.is_flat``) rather than batch-dependent noise."""
    config = GenerationConfig(steps=2, **SIZE)
    segmentation = SegmentationConfig(VOCABULARY)
    prompts, seeds = ["a cat on a sofa", "a tree", "two dogs"], [7, 8, 9]
    batch = generate_traced(tiny_pipe, prompts, seeds, config, segmentation=segmentation)
    for i in (0, 2):
        [alone] = generate_traced(tiny_pipe, [prompts[i]], [seeds[i]], config, segmentation=segmentation)
        a, b = alone.segmentation, batch[i].segmentation
        assert a.labels == b.labels
        np.testing.assert_allclose(a.class_maps, b.class_maps, rtol=0, atol=1e-5)
        assert (a.label_map != b.label_map).mean() < 0.01  # only pixels on a threshold can flip
    empty = batch[1].segmentation
    assert empty.labels == [] and empty.class_maps.shape == (0, 16, 16) and not empty.label_map.any()


def test_append_class_prompt_changes_the_generated_prompt(tiny_pipe):
    config = GenerationConfig(steps=2, height=64, width=64)
    segmentation = SegmentationConfig(VOCABULARY, refine=False, append_class_prompt=True)
    named, unnamed = generate_traced(tiny_pipe, ["a dog and a cat and a dog", "a tree"], [1, 2], config,
                                     segmentation=segmentation)
    assert named.heat_map.prompt.prompt == named.segmentation.prompt == "a dog and a cat and a dog; dog cat"
    assert [m.name for m in named.segmentation.matches] == ["dog", "cat", "dog", "dog", "cat"]
    assert named.segmentation.labels == [2, 1]
    tokens = named.heat_map.prompt.tokens
    assert all(tokens[m.token_span[0]] == m.name for m in named.segmentation.matches)
    assert unnamed.heat_map.prompt.prompt == "a tree"
    [plain] = generate_traced(tiny_pipe, ["a dog and a cat and a dog"], [1], config)
    assert not np.array_equal(plain.image, named.image)


def test_bad_refine_factor_names_the_available_factors(tiny_pipe):
    segmentation = SegmentationConfig(VOCABULARY, refine_factor=16)
    with pytest.raises(ValueError, match=r"refine factor 16: .* self-attention at factors 1, 2, 4, 8\)"):
        generate_traced(tiny_pipe, ["a cat"], [0], GenerationConfig(steps=1, height=64, width=64),
                        segmentation=segmentation)
    assert not any(isinstance(v, DaamSelfAttnProcessor) for v in tiny_pipe.unet.attn_processors.values())

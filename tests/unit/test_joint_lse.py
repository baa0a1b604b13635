"""The log-sum-exp from the fused attention kernel: the output is SDPA's bit for bit, the LSE is the
scores' own, the maps equal the chunked path over every key, and a kernel that disagrees with SDPA
is never used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution import joint
from transforms.attribution.joint import attention_with_lse, text_key_maps


def _qkv(batch=2, heads=3, seq=40, dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, seq, dim, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_kernel_output_is_sdpa_and_lse_is_the_scores(dtype):
    q, k, v = _qkv(dtype=dtype)
    for _ in range(2):  # the first call checks the kernel against SDPA, the second trusts it
        out, lse = attention_with_lse(q, k, v)
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
        assert lse is not None and lse.shape == q.shape[:3] and lse.dtype == torch.float32
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        torch.testing.assert_close(lse, scores.logsumexp(-1), rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("heads", ["mean", "max"])
def test_maps_from_the_kernel_lse_equal_the_chunked_path(heads):
    q, k, v = _qkv(seq=48, seed=3)
    image, text = slice(8, None), slice(0, 8)
    _, lse = attention_with_lse(q, k, v)
    scale = q.shape[-1] ** -0.5
    for budget in (joint.CHUNK_BUDGET_BYTES, 2000):  # one chunk; many small ones
        fused = text_key_maps(q, k, image, text, scale, "all", heads, budget_bytes=budget, lse=lse)
        chunked = text_key_maps(q, k, image, text, scale, "all", heads, budget_bytes=budget)
        torch.testing.assert_close(fused, chunked, rtol=0, atol=1e-6)
    # "text" renormalises over the text keys: the kernel's LSE (over every key) is not used
    assert torch.equal(text_key_maps(q, k, image, text, scale, "text", lse=lse), text_key_maps(q, k, image, text, scale, "text"))


def test_a_kernel_that_differs_from_sdpa_is_never_used(monkeypatch):
    q, k, v = _qkv(seq=24, seed=5)
    calls = []

    def off(q, k, v):
        calls.append(1)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)
        return out + 1e-3, lse

    monkeypatch.setattr(joint, "_VERIFIED", {})
    monkeypatch.setattr(joint, "_lse_kernel", lambda q, k, v: off)
    for _ in range(2):
        out, lse = attention_with_lse(q, k, v)
        assert lse is None and torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert len(calls) == 1  # checked once, then refused for this signature


def test_math_kernel_gives_no_lse():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _qkv(seq=16, seed=7)
    with sdpa_kernel(SDPBackend.MATH):
        out, lse = attention_with_lse(q, k, v)
        assert lse is None and torch.equal(out, F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("family", ["tiny-flux", "tiny-sd3"])
def test_traced_maps_with_kernel_lse_equal_the_chunked_path(family, monkeypatch, one_torch_thread):
    from transforms.models.loading import ModelSpec, load_pipeline

    pipe = load_pipeline(ModelSpec(family, device="cpu"))
    config = GenerationConfig(steps=2, height=64, width=64, guidance_scale=4.0, trace=TraceConfig(layers="all"))
    prompts, seeds = ["a red bicycle next to a wall", "two cats"], [3, 4]
    used = []
    real = joint.attention_with_lse

    def spy(q, k, v):
        out, lse = real(q, k, v)
        used.append(lse is not None)
        return out, lse

    module = __import__(f"transforms.attribution.architectures.{'flux' if 'flux' in family else 'sd3'}", fromlist=["x"])
    monkeypatch.setattr(module, "attention_with_lse", spy)
    fused = generate_traced(pipe, prompts, seeds, config)
    assert used and all(used)  # every traced call took the kernel's LSE
    monkeypatch.setattr(module, "attention_with_lse", lambda q, k, v: (F.scaled_dot_product_attention(q, k, v), None))
    chunked = generate_traced(pipe, prompts, seeds, config)
    for a, b in zip(fused, chunked):
        assert (a.image == b.image).all()
        torch.testing.assert_close(a.heat_map.maps, b.heat_map.maps, rtol=0, atol=1e-5)

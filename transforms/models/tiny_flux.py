"""The built-in ``tiny-flux``: a FLUX.1-dev-shaped ``FluxPipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny`` (``tiny_model.cached_model``). Shape: 2 double-stream and 3 single-stream blocks with 2
heads of 16 (rotary axes 4+6+6), guidance embedded as in FLUX.1-dev (no CFG batch), in 64 = 16
latent channels x 2x2 packing; a 2-layer CLIP text encoder (pooled vector only) with the real
CLIP BPE tokenizer; a 2-layer T5 encoder with the built T5-style tokenizer
(``tiny_t5.build_t5_tokenizer``, a ``tokenizers`` Unigram model), 64 tokens long; a 2-block VAE
with 16 latent channels and FLUX.1's shift/scaling factors; FLUX.1-dev's flow-matching
scheduler. The QK-norm gains are raised so that the random attention is peaked and per-token
maps differ.

Default size: what ``FluxPipeline`` itself uses, ``default_sample_size`` (128 latents, fixed in
the pipeline) x ``vae_scale_factor`` (2 here) = 256 px, a 64x64 map grid; tests pass smaller sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_sd import build_clip_tokenizer, cached_model
from .tiny_parts import clip_text_encoder, t5_encoder, tiny_vae

TINY_FLUX_FOLDER = "tiny-flux-v1"
TINY_FLUX_MAX_LENGTH = 64  # T5 tokens: short keeps the tiny fast (FLUX.1: 512)
_SEED = 20240801
_QK_GAIN = 2.0  # on the RMSNorm weights of q and k (scaling the projections would be normalised away)
_TEXT_DIM = 32


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary dimensions (text/time, row, column) summing to ``head_dim``, each even (16: 4+6+6)."""
    side = (3 * head_dim // 8) // 2 * 2
    return head_dim - 2 * side, side, side


def _transformer(num_layers: int, num_single_layers: int, heads: int, head_dim: int) -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=_TEXT_DIM,
        pooled_projection_dim=_TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=rope_axes(head_dim),
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
                parameter.mul_(_QK_GAIN)
    return transformer


def _text_encoders(max_length: int) -> tuple[Any, Any, Any]:
    """(CLIP text encoder, T5 encoder, T5 tokenizer)."""
    from .tiny_t5 import build_t5_tokenizer

    clip = clip_text_encoder(_TEXT_DIM, _SEED + 1, num_attention_heads=2)
    tokenizer = build_t5_tokenizer(model_max_length=max_length)
    t5 = t5_encoder(len(tokenizer), _TEXT_DIM, _SEED + 2, relative_attention_max_distance=32)
    return clip, t5, tokenizer


def flux_vae(seed: int = _SEED + 3) -> Any:
    """A 2-block, 16-channel VAE with FLUX.1's shift and scaling factors (``vae_scale_factor`` 2)."""
    return tiny_vae(
        seed, (8, 16), 16, sample_size=256, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.1159, scaling_factor=0.3611,
    )


def flux_scheduler() -> Any:
    """FLUX.1-dev's flow-matching Euler scheduler (dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )


def build_tiny_flux_pipeline(
    num_layers: int = 2,
    num_single_layers: int = 3,
    heads: int = 2,
    head_dim: int = 16,
    max_length: int = TINY_FLUX_MAX_LENGTH,
) -> Any:
    """Build the tiny ``FluxPipeline`` in memory (deterministic weights); the arguments give
    other block counts, head shapes and T5 lengths (the built-in uses the defaults)."""
    from diffusers import FluxPipeline

    clip, t5, t5_tokenizer = _text_encoders(max_length)
    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=flux_vae(),
        text_encoder=clip,
        tokenizer=build_clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=_transformer(num_layers, num_single_layers, heads, head_dim),
    )


def tiny_flux_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-flux`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_FLUX_FOLDER, build_tiny_flux_pipeline, cache_dir)

"""The built-ins ``tiny-flux2-klein`` and ``tiny-flux2``: FLUX.2 [klein]- and [dev]-shaped pipelines, random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as diffusers' own klein test (``get_dummy_components``): a ``Flux2Transformer2DModel``
with 1 double-stream and 1 single-stream block, 2 heads of 16, rotary axes 4+4+4+4 (time, row,
column, text position), no guidance embedding (klein), 4 = 1 latent channel x 2x2 patches; a
1-channel one-level ``AutoencoderKLFlux2`` (``vae_scale_factor`` 1: a map cell is 2x2 pixels); a
28-layer ``Qwen3ForCausalLM`` of width 16 so that the pipeline's default layers (9, 18, 27) exist
and ``joint_attention_dim`` is 3 x 16 = 48; the offline Qwen tokenizer with Qwen3's chat template
(``tiny_qwen``), 64 tokens long (klein: 512); FLUX.2's flow-matching scheduler. ``is_distilled``
False: a base model, guidance as true CFG (two transformer calls per step). The QK-norm gains are
raised so that the random attention is peaked and per-token maps differ.

Default size: ``Flux2KleinPipeline``'s ``default_sample_size`` (128) x ``vae_scale_factor`` (1) = 128 px.

``tiny-flux2`` (FLUX.2 [dev], ``Flux2Pipeline``): the same transformer with the guidance embedding
(dev's guidance is embedded: one call per step), a 31-layer ``Mistral3ForConditionalGeneration`` of
width 16 (dev's layers 10, 20, 30) and the offline Mistral tokenizer with Mistral Small 3.1's chat
template (``tiny_mistral``; in place of the ``PixtralProcessor``, which needs torchvision), 128 tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_qwen import build_qwen_tokenizer, qwen3_encoder
from .tiny_sd import cached_model

TINY_FLUX2_KLEIN_FOLDER = "tiny-flux2-klein-v1"
TINY_FLUX2_FOLDER = "tiny-flux2-v1"
TINY_FLUX2_MAX_LENGTH = 64
TINY_FLUX2_DEV_MAX_LENGTH = 128  # the system message and template take 56 of them
KLEIN_TEXT_LAYERS = 28  # hidden states 9, 18 and 27 (the pipeline's default) exist
DEV_TEXT_LAYERS = 31  # dev's: 10, 20 and 30
_SEED = 20260115
_QK_GAIN = 2.0
_TEXT_WIDTH = 16
_QK_NORMS = ("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")


def flux2_transformer(
    num_layers: int, num_single_layers: int, heads: int, head_dim: int, text_dim: int, guidance_embeds: bool
) -> Any:
    """A seeded ``Flux2Transformer2DModel`` on 1 latent channel packed 2x2, QK-norm gains raised."""
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(_SEED)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=text_dim,
        timestep_guidance_channels=256, axes_dims_rope=(head_dim // 4,) * 4, guidance_embeds=guidance_embeds,
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if name.endswith(_QK_NORMS):
                parameter.mul_(_QK_GAIN)
    return transformer


def flux2_vae(seed: int = _SEED + 1) -> Any:
    """diffusers' test VAE: one level (``vae_scale_factor`` 1), one latent channel."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    return AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
    )


def flux2_scheduler() -> Any:
    """FLUX.2's flow-matching Euler scheduler (dynamic shifting; the pipeline computes ``mu``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def build_tiny_flux2_klein_pipeline(
    num_layers: int = 1, num_single_layers: int = 1, heads: int = 2, head_dim: int = 16,
    max_length: int = TINY_FLUX2_MAX_LENGTH, is_distilled: bool = False,
) -> Any:
    """Build the tiny ``Flux2KleinPipeline`` in memory (deterministic weights); the arguments give
    other block counts, head shapes, Qwen lengths and the distilled variant (tests)."""
    from diffusers import Flux2KleinPipeline

    tokenizer = build_qwen_tokenizer(model_max_length=max_length)
    return Flux2KleinPipeline(
        scheduler=flux2_scheduler(),
        vae=flux2_vae(),
        text_encoder=qwen3_encoder(len(tokenizer), _TEXT_WIDTH, KLEIN_TEXT_LAYERS, _SEED + 2),
        tokenizer=tokenizer,
        transformer=flux2_transformer(num_layers, num_single_layers, heads, head_dim, 3 * _TEXT_WIDTH, False),
        is_distilled=is_distilled,
    )


def build_tiny_flux2_pipeline(
    num_layers: int = 1, num_single_layers: int = 1, heads: int = 2, head_dim: int = 16,
    max_length: int = TINY_FLUX2_DEV_MAX_LENGTH,
) -> Any:
    """Build the tiny ``Flux2Pipeline`` (FLUX.2 [dev]) in memory: the same transformer shape with
    a guidance embedding, a 31-layer Mistral 3 of width 16 (the pipeline's layers 10, 20, 30),
    the offline Mistral tokenizer with the chat template (``tiny_mistral``)."""
    from diffusers import Flux2Pipeline

    from .tiny_mistral import build_mistral_tokenizer, mistral3_encoder

    tokenizer = build_mistral_tokenizer(model_max_length=max_length)
    return Flux2Pipeline(
        scheduler=flux2_scheduler(),
        vae=flux2_vae(),
        text_encoder=mistral3_encoder(tokenizer, _TEXT_WIDTH, DEV_TEXT_LAYERS, _SEED + 3),
        tokenizer=tokenizer,
        transformer=flux2_transformer(num_layers, num_single_layers, heads, head_dim, 3 * _TEXT_WIDTH, True),
    )


def tiny_flux2_klein_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-flux2-klein`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_FLUX2_KLEIN_FOLDER, build_tiny_flux2_klein_pipeline, cache_dir)


def tiny_flux2_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-flux2`` (FLUX.2 [dev]) folder, built first if needed."""
    return cached_model(TINY_FLUX2_FOLDER, build_tiny_flux2_pipeline, cache_dir)

"""The built-in ``tiny-sdxl``: an SDXL-shaped ``StableDiffusionXLPipeline`` with random weights.

Built deterministically (fixed seeds) and cached as an ordinary diffusers folder, like ``tiny``
(``tiny_model.cached_model``). Shape, as SDXL's: a UNet without attention at the first level
(``DownBlock2D``), cross-attention at latent factors 2 and 4 in the down and up blocks and at
factor 4 in the mid block, two transformer layers per block at factor 4 (SDXL: 2 and 10), the
``text_time`` added embedding (pooled text + six micro-conditioning numbers); two CLIP text
encoders of different widths whose penultimate states are concatenated along features (the
cross-attention width is their sum), the second with a projection giving the pooled vector; the
real CLIP BPE tokenizer twice (the second padding with ``!`` as SDXL's); a VAE with
``vae_scale_factor`` 8 and SDXL's latent scaling; SDXL's ``EulerDiscreteScheduler``. Default
size 256 px (32 latents). Cross-attention query/key weights are scaled up as in ``tiny`` so the
random model's maps are peaked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_sd import _QK_GAIN, build_clip_tokenizer, cached_model
from .tiny_parts import clip_text_encoder, scale_cross_attention_qk, tiny_vae

TINY_SDXL_NAME = "tiny-sdxl"
TINY_SDXL_VERSION = "1"
_SEED = 20240620
TEXT_WIDTHS = (32, 48)  # the two encoders' hidden sizes (SDXL: 768 and 1280)
POOLED_DIM = 32  # the second encoder's projection (SDXL: 1280)
TIME_EMBED_DIM = 8  # per micro-conditioning number (SDXL: 256)
MICRO_CONDITIONS = 6  # original size (2), crop top-left (2), target size (2)


def sdxl_unet(
    cross_attention_dim: int,
    pooled_dim: int = POOLED_DIM,
    seed: int = _SEED,
    **overrides: Any,
) -> Any:
    """An SDXL-style ``UNet2DConditionModel`` (``text_time`` added embedding) with seeded weights
    and cross-attention query/key weights scaled by ``tiny_model``'s gain; ``overrides`` replace
    any of the tiny defaults (block types, channels, heads, depths)."""
    from diffusers import UNet2DConditionModel

    values = dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 2, 4),  # diffusers reads these as heads
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        norm_num_groups=8,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        cross_attention_dim=cross_attention_dim,
        projection_class_embeddings_input_dim=MICRO_CONDITIONS * int(values["addition_time_embed_dim"]) + pooled_dim,
        **values,
    )
    scale_cross_attention_qk(unet, _QK_GAIN)
    return unet


def sdxl_vae(seed: int = _SEED + 1) -> Any:
    """A small ``AutoencoderKL`` with ``vae_scale_factor`` 8 and SDXL's latent scaling."""
    return tiny_vae(seed, (8, 8, 16, 16), 4, sample_size=256, scaling_factor=0.13025)


def sdxl_scheduler() -> Any:
    """SDXL's scheduler: Euler on the scaled-linear schedule, leading spacing."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def sdxl_tokenizers() -> tuple[Any, Any]:
    """The two CLIP tokenizers (the second pads with ``!``, as SDXL's ``tokenizer_2``)."""
    second = build_clip_tokenizer()
    second.pad_token = "!"
    return build_clip_tokenizer(), second


def build_tiny_sdxl_pipeline(text_widths: tuple[int, int] = TEXT_WIDTHS, **unet_overrides: Any) -> Any:
    """Build the tiny ``StableDiffusionXLPipeline`` in memory (deterministic weights);
    ``text_widths`` and ``unet_overrides`` give other shapes of the same kind."""
    from diffusers import StableDiffusionXLPipeline

    first, second = text_widths
    pooled = {"projection_dim": POOLED_DIM, "hidden_act": "gelu"}
    text_encoder = clip_text_encoder(first, _SEED + 2, **pooled)
    text_encoder_2 = clip_text_encoder(second, _SEED + 3, projection=True, **pooled)
    tokenizer, tokenizer_2 = sdxl_tokenizers()
    return StableDiffusionXLPipeline(
        vae=sdxl_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=sdxl_unet(first + second, POOLED_DIM, **unet_overrides),
        scheduler=sdxl_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def tiny_sdxl_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-sdxl`` folder, built first if needed (safe under concurrency)."""
    return cached_model(f"tiny-sdxl-v{TINY_SDXL_VERSION}", build_tiny_sdxl_pipeline, cache_dir)

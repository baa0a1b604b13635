"""The built-in ``tiny-pixart``: a PixArt-Σ-shaped ``PixArtSigmaPipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as PixArt-Σ (``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS``): a
``PixArtTransformer2DModel`` of ``BasicTransformerBlock``s (self-attention, then cross-attention
on the T5 tokens), adaLN-single, 2×2 patches, learned sigma (8 output channels for 4 latent
ones); a 2-layer T5 encoder with the built T5-style tokenizer (``tiny_t5``) and Σ's 300-token
window; a 4-channel VAE with ``vae_scale_factor`` 8; DPM-Solver++ as Σ ships. ``sample_size`` 32
is one the pipeline has a bin table for, so it runs with resolution binning on, as Σ does:
256 px by default, a 16×16 map grid. Cross-attention query/key weights are scaled up so that
the random model's attention is peaked and per-token maps differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_parts import scale_cross_attention_qk, t5_encoder, tiny_vae
from .tiny_sd import cached_model
from .tiny_t5 import build_t5_tokenizer

TINY_PIXART_FOLDER = "tiny-pixart-v1"
_SEED = 20240317
_QK_GAIN = 4.0
_HEADS, _HEAD_DIM = 4, 8
_T5_WIDTH = 64  # caption_channels (4096 in Σ)
PIXART_MAX_LENGTH = 300  # PixArtSigmaPipeline's max_sequence_length


def build_pixart_components(num_layers: int = 2, heads: int = _HEADS, sample_size: int = 32) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give folders of other shapes (tests)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    torch.manual_seed(_SEED)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=_HEAD_DIM,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        cross_attention_dim=heads * _HEAD_DIM,
        caption_channels=_T5_WIDTH,
        sample_size=sample_size,
        patch_size=2,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )
    scale_cross_attention_qk(transformer, _QK_GAIN)
    tokenizer = build_t5_tokenizer(model_max_length=PIXART_MAX_LENGTH)
    return {
        "tokenizer": tokenizer,
        "text_encoder": t5_encoder(len(tokenizer), _T5_WIDTH, _SEED + 1, d_kv=16, d_ff=128),
        "vae": tiny_vae(_SEED + 2, (8, 8, 16, 16), 4, sample_size=sample_size * 8),
        "transformer": transformer,
        "scheduler": DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    }


def build_tiny_pixart_pipeline(**variant: Any) -> Any:
    """Build the tiny ``PixArtSigmaPipeline`` in memory (deterministic weights); ``variant``:
    ``build_pixart_components``' arguments."""
    from diffusers import PixArtSigmaPipeline

    return PixArtSigmaPipeline(**build_pixart_components(**variant))


def tiny_pixart_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-pixart`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_PIXART_FOLDER, build_tiny_pixart_pipeline, cache_dir)

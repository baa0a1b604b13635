"""The built-in ``tiny-chroma``: a Chroma-shaped ``ChromaPipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as Chroma (``lodestones/Chroma1-HD``): a ``ChromaTransformer2DModel`` — Flux's
double- and single-stream blocks (2 + 2 here, 2 heads of 16, rotary axes 4+6+6) modulated by a
small ``ChromaApproximator`` instead of per-block adaLN, 16 latent channels packed 2×2 — a
2-layer T5 encoder with the built T5-style tokenizer (``tiny_t5``), 64 tokens long (Chroma: 512),
tiny-flux's VAE (16 latent channels, factor 2) and flow-matching Euler scheduler. No CLIP: T5 only.
The QK-norm gains are raised so that the random attention is peaked and per-token maps differ.
Default size: ``ChromaPipeline``'s ``default_sample_size`` (128) × ``vae_scale_factor`` (2) = 256 px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_flux import flux_scheduler, flux_vae, rope_axes
from .tiny_parts import t5_encoder
from .tiny_sd import cached_model
from .tiny_t5 import build_t5_tokenizer

TINY_CHROMA_FOLDER = "tiny-chroma-v1"
TINY_CHROMA_MAX_LENGTH = 64
_SEED = 20250912
_QK_GAIN = 2.0
_TEXT_DIM = 32


def build_chroma_components(num_layers: int = 2, num_single_layers: int = 2, heads: int = 2) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give folders of other shapes (tests)."""
    from diffusers import ChromaTransformer2DModel

    head_dim = 16
    torch.manual_seed(_SEED)
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=_TEXT_DIM,
        axes_dims_rope=rope_axes(head_dim), approximator_num_channels=16, approximator_hidden_dim=32,
        approximator_layers=1,
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
                parameter.mul_(_QK_GAIN)
    tokenizer = build_t5_tokenizer(model_max_length=TINY_CHROMA_MAX_LENGTH)
    return {
        "transformer": transformer,
        "vae": flux_vae(_SEED + 1),
        "text_encoder": t5_encoder(len(tokenizer), _TEXT_DIM, _SEED + 2, d_kv=16, d_ff=64),
        "tokenizer": tokenizer,
        "scheduler": flux_scheduler(),
    }


def build_tiny_chroma_pipeline(**variant: Any) -> Any:
    """Build the tiny ``ChromaPipeline`` in memory (deterministic weights)."""
    from diffusers import ChromaPipeline

    return ChromaPipeline(**build_chroma_components(**variant))


def tiny_chroma_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-chroma`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_CHROMA_FOLDER, build_tiny_chroma_pipeline, cache_dir)

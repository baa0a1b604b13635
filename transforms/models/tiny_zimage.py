"""The built-in ``tiny-zimage``: a Z-Image-shaped ``ZImagePipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as diffusers' own Z-Image test (``Tongyi-MAI/Z-Image`` scaled down): a
``ZImageTransformer2DModel`` (S3-DiT) of dim 32, 2 heads of 16 (rotary axes 8+4+4), 1 image-only
``noise_refiner`` and 1 text-only ``context_refiner`` block, then 2 joint single-stream ``layers``,
2×2 patches of 16 latent channels; a 2-layer ``Qwen3Model`` of width 16 (``cap_feat_dim``) with the
built Qwen-style tokenizer and chat template (``tiny_qwen``); tiny-flux's 2-block, 16-channel VAE
(factor 2) and flow-matching Euler scheduler. ``x_pad_token``/``cap_pad_token`` are uninitialised
in a fresh model: they are set from the seed here (the caption pads are attended keys). The
QK-norm gains are raised so that the random attention is peaked and per-token maps differ.
Default size: ``ZImagePipeline``'s own 1024 px; tests and runs pass small sizes (32 px: a 8×8 grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_flux import flux_scheduler, flux_vae
from .tiny_qwen import build_qwen_tokenizer
from .tiny_sd import cached_model

TINY_ZIMAGE_FOLDER = "tiny-zimage-v2"
_SEED = 20251127
_QK_GAIN = 2.0
_TEXT_DIM = 16  # Qwen3's hidden size = the transformer's cap_feat_dim (2560 in Z-Image)


def qwen3_encoder(vocab_size: int, seed: int, layers: int = 2) -> Any:
    """A seeded small ``Qwen3Model`` of width ``_TEXT_DIM`` (2 heads of 8)."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=_TEXT_DIM, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
    )
    return Qwen3Model(config)


def build_zimage_components(layers: int = 2, refiner_layers: int = 1, heads: int = 2) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give folders of other shapes (tests)."""
    from diffusers import ZImageTransformer2DModel

    head_dim = 16
    torch.manual_seed(_SEED)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=heads * head_dim, n_layers=layers,
        n_refiner_layers=refiner_layers, n_heads=heads, n_kv_heads=heads, cap_feat_dim=_TEXT_DIM,
        axes_dims=[8, 4, 4], axes_lens=[1024, 128, 128],
    )
    with torch.no_grad():
        transformer.x_pad_token.copy_(torch.randn_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.randn_like(transformer.cap_pad_token))
        for name, parameter in transformer.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight")):
                parameter.mul_(_QK_GAIN)
    tokenizer = build_qwen_tokenizer()
    return {
        "transformer": transformer,
        "vae": flux_vae(_SEED + 1),
        "text_encoder": qwen3_encoder(len(tokenizer), _SEED + 2),
        "tokenizer": tokenizer,
        "scheduler": flux_scheduler(),
    }


def build_tiny_zimage_pipeline(**variant: Any) -> Any:
    """Build the tiny ``ZImagePipeline`` in memory (deterministic weights); ``variant``:
    ``build_zimage_components``' arguments."""
    from diffusers import ZImagePipeline

    return ZImagePipeline(**build_zimage_components(**variant))


def tiny_zimage_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-zimage`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_ZIMAGE_FOLDER, build_tiny_zimage_pipeline, cache_dir)

"""The built-in ``tiny-sd3``: an SD3-shaped ``StableDiffusion3Pipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as SD3: an MMDiT (``SD3Transformer2DModel``, 2×2 patches, joint attention in every
block, the last one ``context_pre_only``), a 16-channel VAE with SD3's shift and scaling factors
and ``vae_scale_factor`` 8, CLIP-L- and CLIP-G-like encoders of different widths (their features
concatenated and zero-padded to the T5 width, as in SD3), a 2-layer T5 encoder, the real CLIP BPE
tokenizer twice and the offline T5-style sentencepiece tokenizer (``tiny_t5``), and the
flow-matching Euler scheduler. Joint-attention query/key weights are scaled up so that the random
model's attention is peaked and per-token maps differ. Default size 256 px (a 16×16 patch grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_sd import build_clip_tokenizer, cached_model
from .tiny_parts import clip_text_encoder, t5_encoder, tiny_vae
from .tiny_t5 import build_t5_tokenizer

TINY_SD3_VERSION = "1"
_SEED = 20240612
_QK_GAIN = 4.0
_HEADS, _HEAD_DIM = 4, 8
_CLIP_WIDTHS = (32, 48)  # CLIP-L, CLIP-G stand-ins (768 and 1280 in SD3)
_T5_WIDTH = 96  # > sum of the CLIP widths: the CLIP features are zero-padded to it, as in SD3
_SAMPLE_SIZE = 32  # latent side: 256 px


def _scale_joint_qk(transformer: Any, gain: float = _QK_GAIN) -> None:
    """Multiply the image and text queries and keys of every joint attention by ``gain``: their
    qk-norm weights where there is one (SD3.5: it would normalise scaled projections away), else
    their projections."""
    with torch.no_grad():
        for module in transformer.modules():
            if getattr(module, "add_k_proj", None) is None:
                continue
            norms = (module.norm_q, module.norm_k, module.norm_added_q, module.norm_added_k)
            if all(getattr(norm, "weight", None) is not None for norm in norms):
                weights = [norm.weight for norm in norms]
            else:
                weights = [p.weight for p in (module.to_q, module.to_k, module.add_q_proj, module.add_k_proj)]
            for weight in weights:
                weight.mul_(gain)


def build_sd3_components(
    num_layers: int = 3,
    heads: int = _HEADS,
    qk_norm: str | None = None,
    dual_attention_layers: tuple[int, ...] = (),
    t5: bool = True,
) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give SD3.5-style or T5-less variants
    (``qk_norm="rms_norm"``, dual attention in some blocks, no ``text_encoder_3``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(_SEED)
    transformer = SD3Transformer2DModel(
        sample_size=_SAMPLE_SIZE,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=num_layers,
        attention_head_dim=_HEAD_DIM,
        num_attention_heads=heads,
        joint_attention_dim=_T5_WIDTH,
        caption_projection_dim=heads * _HEAD_DIM,
        pooled_projection_dim=sum(_CLIP_WIDTHS),
        pos_embed_max_size=96,
        qk_norm=qk_norm,
        dual_attention_layers=dual_attention_layers,
    )
    _scale_joint_qk(transformer)
    vae = tiny_vae(
        _SEED + 1, (8, 8, 16, 16), 16, sample_size=_SAMPLE_SIZE * 8, shift_factor=0.0609, scaling_factor=1.5035,
        use_quant_conv=False, use_post_quant_conv=False,
    )
    text_encoder_3 = None
    tokenizer_3 = build_t5_tokenizer() if t5 else None
    if tokenizer_3 is not None:
        text_encoder_3 = t5_encoder(len(tokenizer_3), _T5_WIDTH, _SEED + 4, d_kv=16, d_ff=128)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": clip_text_encoder(_CLIP_WIDTHS[0], _SEED + 2, projection=True),
        "text_encoder_2": clip_text_encoder(_CLIP_WIDTHS[1], _SEED + 3, projection=True),
        "text_encoder_3": text_encoder_3,
        "tokenizer": build_clip_tokenizer(),
        "tokenizer_2": build_clip_tokenizer(),
        "tokenizer_3": tokenizer_3,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def build_tiny_sd3_pipeline(**variant: Any) -> Any:
    """Build the tiny ``StableDiffusion3Pipeline`` in memory (deterministic weights); ``variant``:
    ``build_sd3_components``' arguments."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**build_sd3_components(**variant))


def tiny_sd3_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-sd3`` folder, built first if needed (safe under concurrency)."""
    return cached_model(f"tiny-sd3-v{TINY_SD3_VERSION}", build_tiny_sd3_pipeline, cache_dir)

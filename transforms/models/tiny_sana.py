"""The built-in ``tiny-sana``: a Sana-shaped ``SanaPipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shape as Sana (``Efficient-Large-Model/Sana_1600M_1024px_diffusers``): a
``SanaTransformer2DModel`` of ``SanaTransformerBlock``s (linear self-attention, then
cross-attention on the Gemma tokens), 1×1 patches; a 2-layer ``Gemma2Model`` with the built
Gemma-style tokenizer (``tiny_gemma``) and Sana's 300-token window (the pipeline's default
complex human instruction stays on); a 6-stage ``AutoencoderDC`` (factor 32, as Sana's DC-AE);
DPM-Solver++ with flow sigmas as Sana ships. ``sample_size`` 16 has a bin table (512 px), so it
runs with resolution binning on, as Sana does: 512 px by default, a 16×16 map grid.
Cross-attention query/key weights are scaled up so that the random attention is peaked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny_gemma import build_gemma_tokenizer
from .tiny_parts import scale_cross_attention_qk
from .tiny_sd import cached_model

TINY_SANA_FOLDER = "tiny-sana-v1"
_SEED = 20241010
_QK_GAIN = 3.0
_HEAD_DIM = 8
_GEMMA_WIDTH = 32  # caption_channels (2304 in Gemma-2 2B)
_LATENT_CHANNELS = 4  # Sana: 32


def gemma_encoder(vocab_size: int, hidden_size: int, seed: int, **overrides: Any) -> Any:
    """A seeded ``Gemma2Model`` (Sana's text encoder class): 2 layers of 2 heads by default."""
    from transformers import Gemma2Config, Gemma2Model

    values: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(seed)
    return Gemma2Model(Gemma2Config(**{**values, **overrides}))


def dc_autoencoder(seed: int, stages: int = 6, latent_channels: int = _LATENT_CHANNELS) -> Any:
    """A seeded small ``AutoencoderDC`` (factor ``2 ** (stages - 1)``: 32 for 6, as Sana's)."""
    from diffusers import AutoencoderDC

    deep = max(16, latent_channels)  # the decoder's input shortcut repeats the latents up to its width
    channels = tuple(8 if i < stages // 2 else deep for i in range(stages))
    torch.manual_seed(seed)
    return AutoencoderDC(
        in_channels=3, latent_channels=latent_channels, attention_head_dim=8,
        encoder_block_types="ResBlock", decoder_block_types="ResBlock",
        encoder_block_out_channels=channels, decoder_block_out_channels=channels,
        encoder_layers_per_block=(1,) * stages, decoder_layers_per_block=(1,) * stages,
        encoder_qkv_multiscales=((),) * stages, decoder_qkv_multiscales=((),) * stages,
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )


def build_sana_components(
    num_layers: int = 2, heads: int = 2, cross_heads: int = 2, sample_size: int = 16, qk_norm: str | None = None
) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give folders of other shapes (tests;
    ``qk_norm="rms_norm_across_heads"``: Sana 1.5's QK-norms)."""
    from diffusers import DPMSolverMultistepScheduler, SanaTransformer2DModel

    torch.manual_seed(_SEED)
    transformer = SanaTransformer2DModel(
        in_channels=_LATENT_CHANNELS, out_channels=_LATENT_CHANNELS, num_attention_heads=heads,
        attention_head_dim=_HEAD_DIM, num_layers=num_layers, num_cross_attention_heads=cross_heads,
        cross_attention_head_dim=_HEAD_DIM, cross_attention_dim=heads * _HEAD_DIM, caption_channels=_GEMMA_WIDTH,
        sample_size=sample_size, patch_size=1, qk_norm=qk_norm,
    )
    scale_cross_attention_qk(transformer, _QK_GAIN)
    tokenizer = build_gemma_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": gemma_encoder(len(tokenizer), _GEMMA_WIDTH, _SEED + 1),
        "vae": dc_autoencoder(_SEED + 2),
        "transformer": transformer,
        "scheduler": DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    }


def build_tiny_sana_pipeline(**variant: Any) -> Any:
    """Build the tiny ``SanaPipeline`` in memory (deterministic weights); ``variant``:
    ``build_sana_components``' arguments."""
    from diffusers import SanaPipeline

    return SanaPipeline(**build_sana_components(**variant))


def tiny_sana_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-sana`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_SANA_FOLDER, build_tiny_sana_pipeline, cache_dir)

"""Seeded small components shared by the built-in tiny models (``tiny``, ``tiny-sdxl``,
``tiny-sd3``, ``tiny-flux``, ``tiny-pixart``): a CLIP text encoder, a T5 encoder and a VAE.

Each builder seeds torch itself, so a component's weights depend only on its arguments; the
tiny models pass their own seeds and shapes (and their saved folders stay byte-identical).
"""

from __future__ import annotations

from typing import Any

import torch

CLIP_VOCAB = 49408
CLIP_POSITIONS = 77


def scale_cross_attention_qk(unet: Any, gain: float) -> None:
    """Multiply the query/key weights of a UNet's cross-attention (``attn2``) by ``gain``, so a
    random model's attention is peaked and its per-token maps differ."""
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(gain)
                module.to_k.weight.mul_(gain)


def clip_text_config(hidden_size: int, **overrides: Any) -> Any:
    """A small CLIP text-encoder config over the CLIP vocabulary (77 positions, 2 layers)."""
    from transformers import CLIPTextConfig

    values: dict[str, Any] = dict(
        vocab_size=CLIP_VOCAB,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_POSITIONS,
        projection_dim=hidden_size,
        bos_token_id=CLIP_VOCAB - 2,
        eos_token_id=CLIP_VOCAB - 1,
        pad_token_id=CLIP_VOCAB - 1,
    )
    return CLIPTextConfig(**{**values, **overrides})


def clip_text_encoder(hidden_size: int, seed: int, projection: bool = False, **overrides: Any) -> Any:
    """A seeded ``CLIPTextModel`` (``projection``: ``CLIPTextModelWithProjection``, SDXL's and
    SD3's second encoders) of ``clip_text_config(hidden_size, **overrides)``."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(clip_text_config(hidden_size, **overrides))


def t5_encoder(vocab_size: int, d_model: int, seed: int, **overrides: Any) -> Any:
    """A seeded 2-layer ``T5EncoderModel`` (gated GELU as T5 v1.1, no dropout)."""
    from transformers import T5Config, T5EncoderModel

    values: dict[str, Any] = dict(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(**{**values, **overrides}))


def tiny_vae(seed: int, block_out_channels: tuple[int, ...], latent_channels: int, **overrides: Any) -> Any:
    """A seeded small ``AutoencoderKL`` (``vae_scale_factor`` = 2 ** (len(blocks) - 1))."""
    from diffusers import AutoencoderKL

    blocks = len(block_out_channels)
    values: dict[str, Any] = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
    )
    torch.manual_seed(seed)
    return AutoencoderKL(**{**values, **overrides})

"""The colour-world denoiser and text encoder, built from diffusers modules.

``ColourWorldUNet``: a pixel UNet on 2x2 patches (pixel-unshuffle: 3x32x32 -> 12x16x16), 16x16
(32 ch) -> 8x8 (64 ch) -> 4x4, diffusers ``ResnetBlock2D`` blocks with a time embedding and skip
connections, and **cross-attention only at 16x16 and 8x8** (down and up paths: 4 diffusers
``Attention`` modules, 2 heads x 32, ``is_cross_attention`` true); no self-attention unless
``self_attention`` (the ``colour-world-sa`` form): then each cross-attention has a diffusers
self-attention ``Attention`` (``down_self1`` … ``up_self1``, ``is_cross_attention`` false) just
before it, as in diffusers' transformer block (attn1 self, attn2 cross). The key mask
reaches each ``Attention`` as an additive ``attention_mask`` (-10000 on hidden keys, so their
probability is exactly 0 in float32), so the project's tracer (``attn_processors`` /
``set_attn_processor``) works on it unchanged. It predicts v on a continuous cosine schedule
(``alpha_sigma``).

``ColourWorldTextEncoder``: no encoder: a learned word embedding plus a learned position
embedding per word (a colour token carries only its colour), between a learned **null slot**
(always visible: the attention sink that start/end tokens are in CLIP models) and one end slot
(always masked, so the context has rows start, words, end like SD's global maps). Unconditional
= only the null slot visible.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D

from .scenes import PROMPT_WORDS, VOCABULARY

MASKED = -10000.0
STUDY_BLOCK = {"resnet_time_act": False, "resnet_eps": 1e-5}


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine schedule at continuous ``t`` in [0, 1] (0 clean, 1 noise), kept off exact 0 and 1."""
    u = (t * 0.992 + 0.004) * (math.pi / 2)
    return torch.cos(u), torch.sin(u)


class ColourWorldTextEncoder(ModelMixin, ConfigMixin):
    """Word + position embeddings between a learned null slot and a masked end slot."""

    @register_to_config
    def __init__(self, vocab_size: int = len(VOCABULARY), max_words: int = PROMPT_WORDS, hidden_size: int = 64):
        super().__init__()
        self.word_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Parameter(torch.randn(max_words, hidden_size) * 0.3)
        self.null_slot = nn.Parameter(torch.randn(1, hidden_size) * 0.3)

    @property
    def num_keys(self) -> int:
        return int(self.config.max_words) + 2

    def forward(
        self,
        input_ids: torch.Tensor,
        word_mask: torch.Tensor | None = None,
        unconditional: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``(B, max_words + 2, hidden)`` and key mask ``(B, max_words + 2)`` bool.

        ``input_ids`` ``(B, n)``, ``n <= max_words`` (shorter prompts are padded and masked);
        ``word_mask`` ``(B, n)`` marks real words (all by default); ``unconditional`` ``(B,)``
        hides every word (only the null slot stays visible).
        """
        batch, n = input_ids.shape
        words = self.config.max_words
        if n > words:
            raise ValueError(f"{n} words given; the colour-world text encoder takes at most {words}")
        if word_mask is None:
            word_mask = torch.ones_like(input_ids, dtype=torch.bool)
        ids = F.pad(input_ids, (0, words - n))
        mask = F.pad(word_mask.bool(), (0, words - n), value=False)
        if unconditional is not None:
            mask = mask & ~unconditional.bool().to(mask.device)[:, None]
        tokens = self.word_embedding(ids) + self.position_embedding
        null = self.null_slot.expand(batch, 1, -1)
        end = torch.zeros_like(null)
        context = torch.cat([null, tokens, end], 1)
        ones = torch.ones(batch, 1, dtype=torch.bool, device=mask.device)
        key_mask = torch.cat([ones, mask, ~ones], 1)
        return context, key_mask


def _cross_attention(channels: int, context_dim: int, heads: int, head_dim: int, groups: int) -> Attention:
    return Attention(
        query_dim=channels,
        cross_attention_dim=context_dim,
        heads=heads,
        dim_head=head_dim,
        bias=True,
        out_bias=True,
        norm_num_groups=groups,
        residual_connection=True,
    )


def _self_attention(channels: int, heads: int, head_dim: int, groups: int) -> Attention:
    return Attention(
        query_dim=channels, heads=heads, dim_head=head_dim, bias=True, out_bias=True,
        norm_num_groups=groups, residual_connection=True,
    )


_SELF_OF = {"down_attn1": "down_self1", "down_attn2": "down_self2", "up_attn2": "up_self2", "up_attn1": "up_self1"}


class ColourWorldUNet(ModelMixin, ConfigMixin, AttentionMixin):
    """Patch-2 pixel UNet predicting v; cross-attention (diffusers ``Attention``) at 16x16 and 8x8.

    ``sample_size`` is the patch grid (16), so ``sample_size * patch_size`` is the image size.
    ``resnet_time_act`` / ``resnet_eps``: diffusers' ``ResnetBlock2D`` defaults (SiLU on the time
    embedding before each block's projection, GroupNorm eps 1e-6) unless set; ``STUDY_BLOCK`` is
    the study's block (the projection of the raw embedding, eps 1e-5), what ``train`` builds.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        patch_size: int = 2,
        in_channels: int = 3,
        block_out_channels: tuple[int, int] = (32, 64),
        cross_attention_dim: int = 64,
        attention_heads: int = 2,
        attention_head_dim: int = 32,
        time_embed_dim: int = 128,
        norm_num_groups: int = 8,
        resnet_time_act: bool = True,
        resnet_eps: float = 1e-6,
        self_attention: bool = False,
    ):
        super().__init__()
        c1, c2 = block_out_channels
        g, td = norm_num_groups, time_embed_dim
        patch_channels = in_channels * patch_size**2
        self.time_proj = Timesteps(td, flip_sin_to_cos=False, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(td, td)
        self.conv_in = nn.Conv2d(patch_channels, c1, 3, padding=1)

        def res(ci: int, co: int) -> ResnetBlock2D:
            return ResnetBlock2D(in_channels=ci, out_channels=co, temb_channels=td, groups=g, eps=resnet_eps,
                                 skip_time_act=not resnet_time_act)

        def attn(c: int) -> Attention:
            return _cross_attention(c, cross_attention_dim, attention_heads, attention_head_dim, g)

        self.down_res1, self.down_attn1 = res(c1, c1), attn(c1)
        self.downsample1 = Downsample2D(c1, use_conv=True, out_channels=c1, padding=1, name="op")
        self.down_res2, self.down_attn2 = res(c1, c2), attn(c2)
        self.downsample2 = Downsample2D(c2, use_conv=True, out_channels=c2, padding=1, name="op")
        self.bottom_res1, self.bottom_res2 = res(c2, c2), res(c2, c2)
        self.up_res2, self.up_attn2 = res(2 * c2, c2), attn(c2)
        self.up_res1, self.up_attn1 = res(c2 + c1, c1), attn(c1)
        if self_attention:
            self.down_self1, self.down_self2 = _self_attention(c1, attention_heads, attention_head_dim, g), \
                _self_attention(c2, attention_heads, attention_head_dim, g)
            self.up_self2, self.up_self1 = _self_attention(c2, attention_heads, attention_head_dim, g), \
                _self_attention(c1, attention_heads, attention_head_dim, g)
        self.norm_out = nn.GroupNorm(g, c1)
        self.conv_out = nn.Conv2d(c1, patch_channels, 3, padding=1)

    def cross_attentions(self) -> list[Attention]:
        """The four cross-attention modules in call order (16x16 down, 8x8 down, 8x8 up, 16x16 up)."""
        return [self.down_attn1, self.down_attn2, self.up_attn2, self.up_attn1]

    def self_attention_factors(self) -> dict[str, int]:
        """Module name -> latent factor of each self-attention module (none without
        ``self_attention``): the refinement probe reads the factors here, not from block names."""
        if not self.config.self_attention:
            return {}
        return {"down_self1": 1, "down_self2": 2, "up_self2": 2, "up_self1": 1}

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """v-prediction ``(B, 3, H, W)`` for images ``sample`` in [-1, 1] scale at continuous
        ``timestep`` in [0, 1]; ``encoder_attention_mask`` ``(B, keys)`` bool marks visible keys."""
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, dtype=sample.dtype, device=sample.device).reshape(-1).expand(batch)
        temb = self.time_embedding(self.time_proj(t * 1000).to(sample.dtype))
        bias = None
        if encoder_attention_mask is not None:
            bias = (~encoder_attention_mask.bool()).to(sample.dtype)[:, None, :] * MASKED
        ctx = encoder_hidden_states

        def cross(name: str, h: torch.Tensor) -> torch.Tensor:
            if self.config.self_attention:
                h = getattr(self, _SELF_OF[name])(h)
            return getattr(self, name)(h, encoder_hidden_states=ctx, attention_mask=bias)

        h = self.conv_in(F.pixel_unshuffle(sample, self.config.patch_size))
        h16 = cross("down_attn1", self.down_res1(h, temb))
        h8 = cross("down_attn2", self.down_res2(self.downsample1(h16), temb))
        h = self.bottom_res2(self.bottom_res1(self.downsample2(h8), temb), temb)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = cross("up_attn2", self.up_res2(torch.cat([h, h8], 1), temb))
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = cross("up_attn1", self.up_res1(torch.cat([h, h16], 1), temb))
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.config.patch_size)

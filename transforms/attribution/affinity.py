"""Self-attention affinity for class-map refinement (``--classes`` with refinement).

Dataset Diffusion (Nguyen et al., NeurIPS 2023, and its released code) refines a class map ``M``
with the UNet's self-attention ``A`` at one resolution (32x32 at 512 px, latent factor 2): ``A^τ·M``.
Here ``A`` is, per image, the mean over heads, kept denoising steps and every ``attn1`` layer at that
factor of the conditional half's ``softmax(q·kᵀ·scale)``: a row-stochastic ``(Q, Q)`` matrix with
``Q = h·w`` the layer grid in row-major order.

The probe keeps each module's own (fused) processor for the attention output and computes the
probabilities of the conditional images a second time, in float32, a few heads at a time, summed over
heads on the module's device: the state is ``Q²·4`` bytes per image, the transient at most
``CHUNK_ELEMENTS`` float32 values twice (scores and softmax).
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from .processor import RecordingProcessor
from .store import HeatMapStore, infer_factor, query_length

CHUNK_ELEMENTS = 2**26  # float32 scores computed at once (256 MiB), at least one head
_LEVEL = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")


def _module_level(name: str, levels: int) -> int | None:
    """UNet level (latent factor ``2**level``) of a module name, from diffusers' block naming."""
    found = _LEVEL.match(name)
    if found is None:
        return None
    if found.group(1) is None:
        return levels - 1
    index = int(found.group(2))
    return index if found.group(1) == "down_blocks" else levels - 1 - index


def self_attention_names(denoiser: Any) -> dict[str, int | None]:
    """Processor name (``…attn1.processor``) -> latent factor of every self-attention module of a
    UNet (``None`` where the block naming does not tell), or as the denoiser's own
    ``self_attention_factors()`` says (module name -> factor) when it has one."""
    own = getattr(denoiser, "self_attention_factors", None)
    if callable(own):
        return {f"{name}.processor": factor for name, factor in own().items()}
    levels = len(getattr(getattr(denoiser, "config", {}), "block_out_channels", ()) or ())
    names: dict[str, int | None] = {}
    for module_name, module in denoiser.named_modules():
        if hasattr(module, "set_processor") and getattr(module, "is_cross_attention", None) is False:
            level = _module_level(module_name, levels) if levels else None
            names[f"{module_name}.processor"] = None if level is None else 2**level
    return names


def require_self_attention(denoiser: Any, factor: int) -> list[str]:
    """The processor names of the self-attention modules at ``factor``; ``ValueError`` naming the
    factors the model has when there is none."""
    names = self_attention_names(denoiser)
    chosen = sorted(n for n, f in names.items() if f == factor)
    if not chosen:
        have = ", ".join(str(f) for f in sorted({f for f in names.values() if f is not None})) or "none"
        raise ValueError(
            f"refine factor {factor}: {type(denoiser).__name__} has no self-attention there "
            f"(it has self-attention at factors {have})"
        )
    return chosen


class AffinityStore:
    """Per-image sums of conditional self-attention probabilities at one latent factor.

    Shares the step counter, the step selection, the image count and the CFG layout of the
    ``HeatMapStore`` it follows (``begin``/``next_step`` on that store drive both), so the affinity
    covers exactly the steps the cross-attention maps do. Make one per generation (or ``reset``).
    """

    def __init__(self, heat: HeatMapStore, factor: int) -> None:
        self.heat = heat
        self.factor = factor
        self.sum: torch.Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        """Forget what was accumulated."""
        self.sum = None
        self.count = 0

    def wants(self, query_len: int) -> bool:
        """Whether a self-attention call with this many queries, at the current step, is recorded."""
        heat = self.heat
        if heat.num_images == 0 or heat.later_call() or not heat.config.keeps_step(heat.step):
            return False
        return infer_factor(query_len, *heat.latent_size)[0] == self.factor

    def add(self, probs_sum: torch.Tensor, heads: int) -> None:
        """Add one call's head-summed probabilities ``(num_images, Q, Q)`` of ``heads`` heads (the
        first call's tensor becomes the sum: pass a fresh one)."""
        if self.sum is None:
            self.sum = probs_sum.float()
        else:
            self.sum += probs_sum
        self.count += heads

    def affinity(self) -> torch.Tensor:
        """The row-stochastic affinity ``(num_images, Q, Q)``, float32, on the model's device."""
        if self.sum is None:
            raise RuntimeError(
                f"no self-attention was recorded at factor {self.factor}: check the step range "
                "against the number of steps"
            )
        return self.sum / self.count


def conditional_self_attention(
    attn: Any,
    hidden_states: torch.Tensor,
    images: int,
    cfg: bool,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q·kᵀ·scale)`` of a self-attention module for the conditional images, summed over
    heads: ``(images, Q, Q)`` float32. Mirrors the input path of diffusers' ``AttnProcessor2_0``
    (spatial norm, group norm, q/k norms); computed ``CHUNK_ELEMENTS`` scores at a time."""
    if cfg:
        hidden_states = hidden_states[images:]
        temb = None if temb is None else temb[images:]
        attention_mask = None if attention_mask is None else attention_mask[images:]
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch, length, _ = hidden_states.shape
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query, key = attn.to_q(hidden_states), attn.to_k(hidden_states)
    heads = attn.heads
    head_dim = key.shape[-1] // heads
    query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        attention_mask = attention_mask.view(batch, heads, -1, attention_mask.shape[-1])
    return head_summed_probabilities(query, key, attn.scale, attention_mask)


def head_summed_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float,
                              attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q·kᵀ·scale)`` summed over heads, ``(batch, Q, Q)`` float32, from ``[B, H, Q, D]``
    queries and keys (an additive mask ``[B, H, Q, K]``), ``CHUNK_ELEMENTS`` scores at a time."""
    batch, heads, length, _ = query.shape
    chunk = max(1, CHUNK_ELEMENTS // max(batch * length * key.shape[2], 1))
    total = torch.zeros(batch, length, key.shape[2], dtype=torch.float32, device=query.device)
    for start in range(0, heads, chunk):
        heads_slice = slice(start, start + chunk)
        # the scale on the (smaller) queries: one pass less over the Q x K scores
        scores = (query[:, heads_slice].float() * scale) @ key[:, heads_slice].float().transpose(-1, -2)
        if attention_mask is not None:
            scores += attention_mask[:, heads_slice].float()
        total += scores.softmax(-1).sum(1)
    return total


def self_attention_with_probabilities(
    attn: Any, hidden_states: torch.Tensor, images: int, cfg: bool,
    attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' ``AttnProcessor2_0`` of a self-attention call, op for op (so its output is the
    module's own), and the conditional images' head-summed probabilities from the same queries
    and keys: ``(output, (images, Q, Q) float32)``. One norm and one projection serve both."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    key = attn.to_k(hidden_states)
    value = attn.to_v(hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
    hidden_states = hidden_states.to(query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    hidden_states = hidden_states / attn.rescale_output_factor
    first = images if cfg else 0
    with torch.no_grad():
        mask = None if attention_mask is None else attention_mask[first:]
        probs = head_summed_probabilities(query[first:], key[first:], attn.scale, mask)
    return hidden_states, probs


class DaamSelfAttnProcessor(RecordingProcessor):
    """Diffusers attention processor for a self-attention module (``attn1``): the output comes from
    ``fallback`` (the module's own, fused processor), unchanged; on calls ``store`` wants, the
    conditional images' head-summed probabilities are added to it."""

    store: AffinityStore

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.store.wants(query_length(hidden_states)):
            heat = self.store.heat
            batch = hidden_states.shape[0]
            expected = heat.num_images * (2 if heat.cfg else 1)
            if batch != expected:
                raise RuntimeError(f"expected a batch of {expected}, got {batch} in {self.name}")
            if type(self.fallback) is AttnProcessor2_0 and encoder_hidden_states is None and not args and not kwargs:
                output, probs = self_attention_with_probabilities(
                    attn, hidden_states, heat.num_images, heat.cfg, attention_mask, temb
                )
                self.store.add(probs, attn.heads)
                return output
            with torch.no_grad():
                probs = conditional_self_attention(
                    attn, hidden_states, heat.num_images, heat.cfg, attention_mask, temb
                )
            self.store.add(probs, attn.heads)
        return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

"""The image → text slice of a joint attention's probabilities, without the full matrix.

Joint-attention transformers (SD3's MMDiT, Flux) attend over one sequence of text and image
tokens; fused kernels never return probabilities. The map of text token ``t`` at image query
``i`` is ``softmax(s·q_i·Kᵀ)[t] = exp(s·q_i·k_t − lse_i)`` with ``lse_i`` the log-sum-exp of row
``i`` over *all* keys (the exact slice of the model's own softmax) or, as an option, over the text
keys only. Rows are processed in query chunks whose scores fit ``budget_bytes``; heads are
reduced on the device, so what leaves this function is ``(batch, image queries, text keys)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from .store import HeatMapStore

Normalize = Literal["all", "text"]
HeadReduce = Literal["mean", "max"]
CHUNK_BUDGET_BYTES = 256 * 2**20


def query_chunk(batch: int, heads: int, keys: int, budget_bytes: int = CHUNK_BUDGET_BYTES) -> int:
    """Image queries per chunk so one chunk's fp32 scores ``(batch, heads, chunk, keys)`` fit."""
    return max(1, budget_bytes // max(1, batch * heads * keys * 4))


def text_key_maps(
    query: torch.Tensor,
    key: torch.Tensor,
    image: slice,
    text: slice,
    scale: float,
    normalize: Normalize = "all",
    heads: HeadReduce = "mean",
    budget_bytes: int = CHUNK_BUDGET_BYTES,
) -> torch.Tensor:
    """Attention probabilities of the ``image`` queries on the ``text`` keys, reduced over heads.

    Args:
        query, key: ``(batch, heads, sequence, head_dim)`` after every normalisation and rotary
            embedding the model applies (what its attention kernel receives).
        image, text: where the image queries and the text keys are in the sequence.
        scale: the softmax scale (``head_dim ** -0.5`` unless the model says otherwise).
        normalize: ``"all"``: the model's own softmax over every key; ``"text"``: renormalised
            over the text keys only.
        heads: ``"mean"`` returns the *sum* over heads (the store divides by the head count);
            ``"max"`` the maximum over heads.

    Returns:
        float32 ``(batch, image queries, text keys)`` on the inputs' device.
    """
    q = query[:, :, image].float()
    k = key.float()
    k_text = k[:, :, text]
    batch, num_heads, num_queries, _ = q.shape
    step = query_chunk(batch, num_heads, k.shape[2], budget_bytes)
    out = torch.empty(batch, num_queries, k_text.shape[2], dtype=torch.float32, device=q.device)
    for start in range(0, num_queries, step):
        chunk = q[:, :, start : start + step]
        if normalize == "all":
            scores = chunk @ k.transpose(-1, -2) * scale
            text_scores = scores[..., text]
            lse = scores.logsumexp(-1, keepdim=True)
        else:
            text_scores = chunk @ k_text.transpose(-1, -2) * scale
            lse = text_scores.logsumexp(-1, keepdim=True)
        probs = (text_scores - lse).exp_()
        out[:, start : start + step] = probs.sum(1) if heads == "mean" else probs.amax(1)
    return out


def record_text_maps(
    store: "HeatMapStore", name: str, query: torch.Tensor, key: torch.Tensor, image: slice, text: slice
) -> None:
    """Add one joint-attention call's image → text maps to ``store`` under ``name``: ``query``/``key``
    ``(batch, heads, sequence, head_dim)`` as the kernel receives them (its default scale
    ``head_dim ** -0.5``), normalised and head-reduced as ``store.config`` says. Only the
    conditional images' rows are computed (under CFG the unconditional half is never mapped)."""
    config = store.config
    rows = store.conditional_rows(name, query.shape[0])
    with torch.no_grad():
        maps = text_key_maps(
            query[rows], key[rows], image, text, query.shape[-1] ** -0.5, config.joint_normalize, config.heads
        )
    store.add_reduced(name, maps, query.shape[1] if config.heads == "mean" else 1, conditional_only=True)

"""The image → text slice of a joint attention's probabilities, without the full matrix.

Joint-attention transformers (SD3's MMDiT, Flux) attend over one sequence of text and image
tokens; fused kernels never return probabilities. The map of text token ``t`` at image query
``i`` is ``softmax(s·q_i·Kᵀ)[t] = exp(s·q_i·k_t − lse_i)`` with ``lse_i`` the log-sum-exp of row
``i`` over *all* keys (the exact slice of the model's own softmax) or, as an option, over the text
keys only. Rows are processed in query chunks whose scores fit ``budget_bytes``; heads are
reduced on the device, so what leaves this function is ``(batch, image queries, text keys)``.

``lse_i`` comes from the model's own attention kernel where PyTorch's fused kernel returns it
(``attention_with_lse``: the flash kernels on CPU and CUDA, the memory-efficient one on CUDA — the
very kernel ``F.scaled_dot_product_attention`` dispatches to, checked bit-identical once per
shape); then only the text keys' scores are computed (``N_img × N_text`` instead of ``N_img ×
(N_text + N_img)``). Elsewhere (the math kernel, masks, other attention backends) it is computed
here over every key, in chunks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

if TYPE_CHECKING:
    from .store import HeatMapStore

logger = logging.getLogger(__name__)

Normalize = Literal["all", "text"]
HeadReduce = Literal["mean", "max"]
CHUNK_BUDGET_BYTES = 256 * 2**20


# (device type, dtype, shapes, strides) -> whether the LSE kernel's output equals SDPA's, bit for bit
_VERIFIED: dict[tuple, bool] = {}


def _lse_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> Callable[..., Any] | None:
    """The fused kernel (returning ``(output, lse)``) that ``F.scaled_dot_product_attention``
    runs for these inputs (no mask, no dropout, default scale), or ``None`` where it returns no
    LSE or would pad the head dimension first."""
    try:
        choice = SDPBackend(torch._fused_sdp_choice(query, key, value, None, 0.0, False))
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    aten = torch.ops.aten
    if choice == SDPBackend.FLASH_ATTENTION and query.device.type == "cpu":
        return lambda q, k, v: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)[:2]
    if query.device.type != "cuda" or query.shape[-1] % 8:
        return None
    if choice == SDPBackend.FLASH_ATTENTION:
        return lambda q, k, v: aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False)[:2]
    if choice == SDPBackend.EFFICIENT_ATTENTION:
        return lambda q, k, v: aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False)[:2]
    return None


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.scaled_dot_product_attention(query, key, value)`` (``(batch, heads, sequence,
    head_dim)``, no mask) and, where its kernel gives it, each query's log-sum-exp of the scaled
    scores ``(batch, heads, sequence)`` float32 (else ``None``).

    The output is the model's own: the kernel is the one SDPA dispatches to, and the first call
    per device, dtype, shape and strides also runs SDPA and keeps the kernel only if both outputs
    are bit-identical (a PyTorch whose SDPA wraps the kernel differently falls back for good)."""
    kernel = None if torch.is_grad_enabled() and query.requires_grad else _lse_kernel(query, key, value)
    if kernel is None:
        return F.scaled_dot_product_attention(query, key, value), None
    signature = (query.device.type, query.dtype, query.shape, key.shape, query.stride(), key.stride(), value.stride())
    if _VERIFIED.get(signature) is False:
        return F.scaled_dot_product_attention(query, key, value), None
    out, lse = kernel(query, key, value)
    if signature not in _VERIFIED:
        expected = F.scaled_dot_product_attention(query, key, value)
        _VERIFIED[signature] = torch.equal(out, expected)
        if not _VERIFIED[signature]:
            logger.info("fused-kernel LSE not used for %s: its output differs from SDPA's", signature[:3])
            return expected, None
    return out, lse[..., : query.shape[2]].float()


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
    lse: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
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
        lse: ``(batch, heads, sequence)`` the log-sum-exp of every query's scaled scores over
            every key, from the attention kernel (``attention_with_lse``); with ``normalize="all"``
            only the text keys' scores are then computed.
        mask: the call's attention mask on the image queries' rows, ``(batch, 1 or heads, image
            queries or 1 (a key mask: Qwen-Image's), every key)``, as the kernel takes it:
            boolean (``True``: attend; masked keys get no probability and leave the log-sum-exp) or float (added to the scores, as SDPA
            adds it: Chroma's pipeline passes its 0/1 key mask as float). With a mask the
            kernel's ``lse`` is not used.

    Returns:
        float32 ``(batch, image queries, text keys)`` on the inputs' device.
    """
    q = query[:, :, image].float()
    k = key.float()
    k_text = k[:, :, text]
    batch, num_heads, num_queries, _ = q.shape
    given = lse[:, :, image].float() if lse is not None and normalize == "all" and mask is None else None
    every_key = normalize == "all" and given is None  # the log-sum-exp over every key, computed here
    step = query_chunk(batch, num_heads, k.shape[2] if every_key else k_text.shape[2], budget_bytes)
    out = torch.empty(batch, num_queries, k_text.shape[2], dtype=torch.float32, device=q.device)
    for start in range(0, num_queries, step):
        chunk = q[:, :, start : start + step]
        rows = mask if mask is None or mask.shape[2] == 1 else mask[:, :, start : start + step]
        if every_key:
            scores = _masked(chunk @ k.transpose(-1, -2) * scale, rows)
            text_scores = scores[..., text]
            lse_chunk = scores.logsumexp(-1, keepdim=True)
        else:
            text_scores = _masked(chunk @ k_text.transpose(-1, -2) * scale, None if rows is None else rows[..., text])
            lse_chunk = text_scores.logsumexp(-1, keepdim=True) if given is None else given[:, :, start : start + step, None]
        probs = (text_scores - lse_chunk).exp_()
        out[:, start : start + step] = probs.sum(1) if heads == "mean" else probs.amax(1)
    return out


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` under an attention mask as SDPA applies it: boolean keeps ``True``, float is added."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.float()


def _image_rows(mask: torch.Tensor, image: slice) -> torch.Tensor:
    """A mask's rows of the image queries (a key mask, one row for every query, as it is)."""
    return mask if mask.shape[2] == 1 else mask[:, :, image]


def record_text_maps(
    store: "HeatMapStore", name: str, query: torch.Tensor, key: torch.Tensor, image: slice, text: slice,
    lse: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> None:
    """Add one joint-attention call's image → text maps to ``store`` under ``name``: ``query``/``key``
    ``(batch, heads, sequence, head_dim)`` as the kernel receives them (its default scale
    ``head_dim ** -0.5``), normalised and head-reduced as ``store.config`` says. Only the
    conditional images' rows are computed (under CFG the unconditional half is never mapped);
    ``lse`` ``(batch, heads, sequence)``: the kernel's log-sum-exp (``attention_with_lse``);
    ``mask``: the call's attention mask ``(batch, 1, sequence or 1, sequence)`` or ``None``."""
    config = store.config
    rows = store.conditional_rows(name, query.shape[0])
    with torch.no_grad():
        maps = text_key_maps(
            query[rows], key[rows], image, text, query.shape[-1] ** -0.5, config.joint_normalize, config.heads,
            lse=None if lse is None else lse[rows], mask=None if mask is None else _image_rows(mask[rows], image),
        )
    store.add_reduced(name, maps, query.shape[1] if config.heads == "mean" else 1, conditional_only=True)

"""The cross-attention processor that records attention probabilities into a ``HeatMapStore``."""

from __future__ import annotations

from typing import Any

import torch

from .store import HeatMapStore, query_length


class RecordingProcessor:
    """Base of the project's attention processors: a store it records into, the processor name it
    records under, and ``fallback``, the module's original (fused) processor, which computes
    every call the store does not want (and, for the joint and self-attention probes, the output).

    Joint-attention processors also read ``record`` (``False``: the module is not traced for DAAM
    maps, only run for the concept stream) and ``concepts`` (a ``concepts.ConceptRecorder`` or
    ``None``), both set by the tracer."""

    record = True
    concepts: Any = None

    def __init__(self, store: Any, name: str, fallback: Any) -> None:
        self.store = store
        self.name = name
        self.fallback = fallback

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every processor's ``__call__`` runs outside ``torch.compile`` graphs (``--compile``):
        traced through, the store's Python state (its step, its sums) becomes guards, and each
        denoising step recompiles the denoiser; left out, the rest of it compiles once."""
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            cls.__call__ = torch.compiler.disable(cls.__call__)  # type: ignore[method-assign]


class DaamCrossAttnProcessor(RecordingProcessor):
    """Diffusers attention processor for a cross-attention module (``attn2``).

    Computes attention exactly as diffusers' default ``AttnProcessor`` (explicit softmax, so the
    probabilities exist; QK-norms applied where the module has them, as ``AttnProcessor2_0`` and
    Sana's processor do) and adds the probabilities to ``store`` under ``name``. Calls the store
    does not want (unselected factor or step) go to ``fallback``, the module's original (fused)
    processor.
    """

    store: HeatMapStore

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
        if not self.store.wants(query_length(hidden_states)):
            # ``temb`` only where given: some processors (Sana's) take none
            extra = (temb, *args) if temb is not None or args else ()
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, *extra, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if getattr(attn, "norm_q", None) is not None:  # QK-norm (Sana 1.5), as ``AttnProcessor2_0``
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)

        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)

        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        if self.store.config.heads == "max":
            grouped = attention_probs.detach().unflatten(0, (-1, attn.heads))
            self.store.add_reduced(self.name, grouped.amax(1), 1)
        else:
            self.store.add(self.name, attention_probs.detach(), attn.heads)
        hidden_states = torch.bmm(attention_probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

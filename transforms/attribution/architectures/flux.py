"""Flux (``FluxPipeline``): joint attention over text and image tokens, text first.

The traced modules are the ``attn`` of every double-stream block (``FluxTransformerBlock``, kind
``double``: text and image streams projected apart, concatenated text first inside the processor)
and of every single-stream block (``FluxSingleTransformerBlock``, kind ``single``: the block
concatenates text and image before attention, so its processor sees one sequence with
``encoder_hidden_states=None``; the text length is the sequence length minus the image tokens,
the store's map grid ``h·w``). In diffusers >= 0.35 these are ``FluxAttention`` modules whose
``FluxAttnProcessor`` calls ``dispatch_attention_fn`` on ``[B, S, H, D]`` tensors.

The map of a text token is the image-query → text-key block of the joint softmax
(``joint.text_key_maps``: no L×L matrix, heads reduced on the device); the attention output keeps
the model's own backend (``JointRecordingProcessor.attend``, shared with Z-Image's recorder, which puts
the image first). Tokens and words are T5's (``tokenizer_2``): its sentencepiece pieces sit
at keys ``0 … n-1``, ``</s>`` at ``n`` (no start token: ``prefix`` 0); CLIP contributes only its
pooled vector. Guidance is an embedding (FLUX.1-dev), so there is no CFG batch; negative prompts
(the pipeline's true-CFG branch) are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import (
    FluxSingleTransformerBlock,
    FluxTransformerBlock,
    _get_qkv_projections,
)

from ..config import GenerationConfig
from ..joint import attention_with_lse, record_text_maps
from ..processor import RecordingProcessor
from ..store import HeatMapStore
from .base import Architecture, TextLayout

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's largest (and default) T5 length
PACKING = 2  # the pipeline packs 2x2 latent patches into one token
_BLOCK_KINDS = ((FluxTransformerBlock, "double"), (FluxSingleTransformerBlock, "single"))


def joint_qkv(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, rotary: Any,
    projections: Callable[..., tuple] = _get_qkv_projections,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value ``[B, S, H, D]`` as ``FluxAttnProcessor`` builds them: projections
    (``projections``: the transformer module's own ``_get_qkv_projections``), QK-norms, text
    concatenated first (double blocks), rotary embedding."""
    return rotary_heads(attn, *projections(attn, hidden_states, encoder_hidden_states), rotary)


def rotary_heads(
    attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, encoder_query: Any, encoder_key: Any,
    encoder_value: Any, rotary: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flux's processors after the projections: heads split off, QK-norms, the text stream's
    (where the module has one) concatenated first, rotary embedding; ``[B, S, H, D]``."""
    query, key, value = (t.unflatten(-1, (-1, attn.head_dim)) for t in (query, key, value))
    query, key = attn.norm_q(query), attn.norm_k(key)
    if getattr(attn, "added_kv_proj_dim", None) is not None:
        encoder_query, encoder_key, encoder_value = (
            t.unflatten(-1, (-1, attn.head_dim)) for t in (encoder_query, encoder_key, encoder_value)
        )
        query = torch.cat([attn.norm_added_q(encoder_query), query], dim=1)
        key = torch.cat([attn.norm_added_k(encoder_key), key], dim=1)
        value = torch.cat([encoder_value, value], dim=1)
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, sequence_dim=1)
    return query, key, value


def joint_output(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, dtype: torch.dtype
) -> Any:
    """``FluxAttnProcessor``'s output from the kernel's ``[B, S, H, D]`` result: the image stream
    and the text stream (double blocks) or the whole sequence (single blocks)."""
    hidden_states = hidden_states.flatten(2, 3).to(dtype)
    if encoder_hidden_states is None:
        return hidden_states
    text = encoder_hidden_states.shape[1]
    encoder_out, hidden_states = hidden_states.split_with_sizes([text, hidden_states.shape[1] - text], dim=1)
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
    return hidden_states, attn.to_add_out(encoder_out.contiguous())


class JointRecordingProcessor(RecordingProcessor):
    """Base of the processors whose original calls ``dispatch_attention_fn`` on ``[B, S, H, D]``
    tensors (Flux, Chroma, Z-Image): the original's backend, and ``attend``, the model's own
    attention output that also records the image → text block of its softmax."""

    store: HeatMapStore

    # ``set_attention_backend`` while traced reaches the original processor
    @property
    def _attention_backend(self) -> Any:
        return getattr(self.fallback, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, backend: Any) -> None:
        self.fallback._attention_backend = backend

    @property
    def _parallel_config(self) -> Any:
        return getattr(self.fallback, "_parallel_config", None)

    def _native(self) -> bool:
        """Whether ``dispatch_attention_fn`` would run diffusers' native backend (plain SDPA)."""
        if self._parallel_config is not None:
            return False
        backend = self._attention_backend
        if backend is None:
            backend = _AttentionBackendRegistry.get_active_backend()[0]
        return AttentionBackendName(backend) == AttentionBackendName.NATIVE

    def records(self) -> bool:
        """Whether this call's DAAM maps are recorded (the module traced, the store wanting the step)."""
        h, w = self.store.latent_size
        return self.record and self.store.wants(h * w)

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
        image: slice, text: slice, daam: bool,
    ) -> torch.Tensor:
        """``dispatch_attention_fn``'s output ``[B, S, H, D]`` with the original's backend (or the
        very SDPA kernel the native backend runs, for its log-sum-exp); with ``daam`` the ``image``
        queries' maps on the ``text`` keys go to the store. ``attention_mask``: as the kernel takes
        it (broadcastable to ``(B, H, S, S)``), applied to the maps as the kernel applies it."""
        lse = None
        if daam and attention_mask is None and self._native():
            # what diffusers' native backend runs (SDPA on [B, H, S, D] views), with the kernel's LSE
            out, lse = attention_with_lse(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
            out = out.transpose(1, 2)
        else:
            out = dispatch_attention_fn(
                query, key, value, attn_mask=attention_mask, backend=self._attention_backend,
                parallel_config=self._parallel_config,
            )
        if daam:
            mask = None
            if attention_mask is not None:  # (B, 1 or H, S or 1, S): every query's row, a view
                size = query.shape[1]
                mask = attention_mask.expand(attention_mask.shape[0], attention_mask.shape[1], size, size)
            record_text_maps(self.store, self.name, query.transpose(1, 2), key.transpose(1, 2), image, text, lse, mask)
        return out


class DaamFluxAttnProcessor(JointRecordingProcessor):
    """``FluxAttnProcessor`` that also records the image → text attention into ``store``.

    The output is computed as diffusers computes it (same projections, norms, rotary embedding
    and ``dispatch_attention_fn`` with the original processor's backend), so images are
    unchanged. Steps the store does not want go to ``fallback``, the original processor.
    """

    projections: Callable[..., tuple] = staticmethod(_get_qkv_projections)  # the transformer module's own

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        h, w = self.store.latent_size
        image_tokens = h * w
        daam = self.records()
        concepts = self.concepts is not None and encoder_hidden_states is not None and self.concepts.active(self.name)
        if not (daam or concepts):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None and (attention_mask.ndim != 4 or concepts):
            raise ValueError(f"{self.name}: only (batch, 1, L, L) attention masks (Chroma's) are traced, not with concept maps")
        if encoder_hidden_states is not None and hidden_states.shape[1] != image_tokens:
            raise RuntimeError(f"expected {image_tokens} image tokens ({h}x{w}), got {hidden_states.shape[1]} in {self.name}")
        query, key, value = joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb, self.projections)
        text = query.shape[1] - image_tokens
        out = self.attend(query, key, value, attention_mask, slice(text, None), slice(0, text), daam)
        if concepts:
            self.concepts.attend(self.name, attn, key, value, out, slice(text, None), hidden_states)
        return joint_output(attn, out, encoder_hidden_states, query.dtype)


class FluxArchitecture(Architecture):
    """FLUX.1 transformers (dev and schnell shapes, any block and head counts)."""

    name = "flux"
    block_kinds: tuple[tuple[type, str], ...] = _BLOCK_KINDS  # (block class, kind) of the traced blocks
    takes_negative_prompts = False  # FLUX.1's guidance is an embedding; its true-CFG branch is not traced

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def word_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer_2

    def sequence_length(self, pipe: Any) -> int:
        """T5 tokens the pipeline is asked for: the word tokenizer's window, at most 512."""
        return min(MAX_SEQUENCE_LENGTH, int(self.word_tokenizer(pipe).model_max_length))

    def text_layout(self, pipe: Any) -> TextLayout:
        return TextLayout(offset=0, prefix=0, max_tokens=self.sequence_length(pipe) - 1)

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        names = {}
        for module_name, module in denoiser.named_modules():
            kind = next((k for cls, k in self.block_kinds if isinstance(module, cls)), None)
            if kind is not None:
                names[f"{module_name}.attn.processor"] = kind
        return names

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        return DaamFluxAttnProcessor(store, name, fallback)

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        return [(f"transformer_blocks.{i}.attn.processor", b) for i, b in enumerate(denoiser.transformer_blocks)]

    def concept_temb(self, denoiser: Any, kwargs: dict[str, Any]) -> torch.Tensor:
        """The official concept modulation: ``time_text_embed`` of the call's timestep and
        guidance with a zero pooled vector (the prompt's streams keep CLIP's pooled vector)."""
        dtype = denoiser.x_embedder.weight.dtype
        timestep = kwargs["timestep"].to(dtype) * 1000
        pooled = torch.zeros_like(kwargs["pooled_projections"])
        guidance = kwargs.get("guidance")
        if guidance is None:
            return denoiser.time_text_embed(timestep, pooled)
        return denoiser.time_text_embed(timestep, guidance.to(dtype) * 1000, pooled)

    def concept_embeddings(self, pipe: Any, names: Sequence[str]) -> torch.Tensor:
        embeds, _, _ = pipe.encode_prompt(
            prompt=list(names), prompt_2=None, device=pipe._execution_device,
            max_sequence_length=self.sequence_length(pipe),
        )
        return embeds

    def default_size(self, pipe: Any) -> tuple[int, int]:
        """What ``FluxPipeline`` uses: ``default_sample_size`` latents times the VAE factor."""
        side = int(pipe.default_sample_size) * int(pipe.vae_scale_factor)
        return side, side

    def map_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        cell = int(pipe.vae_scale_factor) * PACKING
        return height // cell, width // cell

    def uses_cfg(self, config: GenerationConfig) -> bool:
        return False

    def call_kwargs(
        self, config: GenerationConfig, negatives: Sequence[str] | None, pipe: Any = None
    ) -> dict[str, Any]:
        if not self.takes_negative_prompts:
            if negatives is not None and any(negatives):
                raise ValueError(
                    "Flux takes no negative prompt here: its guidance is an embedding, and the "
                    "pipeline's true-CFG negative branch is not traced; drop the negative prompt"
                )
            negatives = None
        return {**super().call_kwargs(config, negatives, pipe), "max_sequence_length": self.sequence_length(pipe)}

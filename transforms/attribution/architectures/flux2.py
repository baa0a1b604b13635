"""Flux.2 [klein] (``Flux2KleinPipeline``): Flux's joint attention in a ``Flux2Transformer2DModel``,
Qwen3 text through a chat template, guidance as two calls.

Traced modules (kinds as for Flux): the ``attn`` of every ``Flux2TransformerBlock`` (``double``:
``Flux2Attention`` + ``Flux2AttnProcessor``: text and image projected apart, QK-normed,
concatenated text first, 4-axis rotary embedding, ``dispatch_attention_fn``) and of every
``Flux2SingleTransformerBlock`` (``single``: ``Flux2ParallelSelfAttention`` +
``Flux2ParallelSelfAttnProcessor``, one fused QKV + MLP projection of the ``[text; image]``
sequence the block concatenates; its call has no ``encoder_hidden_states``, the text length is
the sequence minus the image tokens). The recorders rebuild q/k as those processors do and take
the image-query → text-key block of the model's own softmax through the row log-sum-exp
(``joint``), the output from the model's own kernel, so images are unchanged. No mask is passed.

Text keys: the pipeline renders the prompt with the tokenizer's chat template (a user turn, the
generation prompt, ``enable_thinking=False``: ``<|im_start|>user\\n PROMPT <|im_end|>\\n
<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``), pads to ``max_sequence_length`` and stacks
Qwen3's hidden states (9, 18, 27); every token is a key. Only the prompt's tokens are mapped: their
keys are found in the pipeline's own tokenisation of the templated text (``chat``), after the
template's (``offset``: 3 with Qwen's tokenizer); the global map's last row is the key after the
prompt (``<|im_end|>``). Words: byte-level BPE, a word starts at a space (``Ġ``), case kept.

Guidance: a base model (``is_distilled`` False) with ``guidance_scale > 1`` runs true CFG as **two
transformer calls** per step, the conditional one first (the store keeps a step's first call);
the negative is always ``""`` (the pipeline takes no negative prompt: one given is refused); a
distilled model runs one call. ConceptAttention is not offered.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2SingleTransformerBlock,
    Flux2TransformerBlock,
    _get_qkv_projections,
)

from ..chat import TemplatedPrompt, templated_prompt
from ..config import GenerationConfig
from ..store import HeatMapStore
from ..words import TokenizedPrompt
from .base import TextLayout
from .flux import DaamFluxAttnProcessor, FluxArchitecture, rotary_heads

_BLOCK_KINDS = ((Flux2TransformerBlock, "double"), (Flux2SingleTransformerBlock, "single"))
_REFERENCE_PROMPT = "a"
CONCEPTS_REFUSED = (
    "concept maps (ConceptAttention) are offered for SD3 and FLUX.1: Flux.2's concept stream is not wired; "
    "leave out --concept-maps (--label-maps daam)"
)
NEGATIVE_REFUSED = (
    "Flux.2 takes no negative prompt: klein's true CFG always uses the empty prompt, dev's guidance is an "
    "embedding; drop the negative prompt"
)


class DaamFlux2AttnProcessor(DaamFluxAttnProcessor):
    """``Flux2AttnProcessor`` (double-stream blocks) that also records the image → text maps."""

    projections = staticmethod(_get_qkv_projections)


class DaamFlux2SingleAttnProcessor(DaamFluxAttnProcessor):
    """``Flux2ParallelSelfAttnProcessor`` (single-stream blocks) that also records the image → text
    maps: the fused projection split as diffusers splits it, the attention output from the
    model's kernel, the MLP half and the fused output projection as in diffusers."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> torch.Tensor:
        if not self.records():
            return self.fallback(attn, hidden_states, attention_mask, image_rotary_emb)
        projected = attn.to_qkv_mlp_proj(hidden_states)
        qkv_dim = 3 * attn.inner_dim
        mlp_dim = attn.mlp_hidden_dim * attn.mlp_mult_factor
        local_qkv = projected.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
        qkv, mlp = torch.split(projected, [local_qkv, projected.shape[-1] - local_qkv], dim=-1)
        query, key, value = rotary_heads(attn, *qkv.chunk(3, dim=-1), None, None, None, image_rotary_emb)
        text = query.shape[1] - self.store.latent_size[0] * self.store.latent_size[1]
        out = self.attend(query, key, value, attention_mask, slice(text, None), slice(0, text), True)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))


class Flux2Architecture(FluxArchitecture):
    """Flux.2 [klein] transformers (any block and head counts) with Qwen3 chat-templated text;
    ``Flux2DevArchitecture`` changes the text encoder's template for FLUX.2 [dev]."""

    name = "flux2"
    block_kinds = _BLOCK_KINDS

    def word_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer

    def render(self, pipe: Any, prompt: str) -> str:
        """The templated text the pipeline encodes for ``prompt`` (``_get_qwen3_prompt_embeds``)."""
        messages = [{"role": "user", "content": prompt}]
        return pipe.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def encoded(self, prompt: str) -> str:
        """The text of ``prompt`` the pipeline puts into the template."""
        return prompt

    def encode_options(self, pipe: Any) -> dict[str, Any]:
        """Keyword arguments of the pipeline's tokenizer call besides padding and truncation."""
        return {}

    def templated(self, pipe: Any, prompt: str, max_tokens: int) -> TemplatedPrompt:
        """``prompt``'s tokens among the keys, as the pipeline tokenises its templated text."""
        return templated_prompt(
            self.word_tokenizer(pipe), lambda p: self.render(pipe, p), self.encoded(prompt), self.sequence_length(pipe),
            max_tokens, **self.encode_options(pipe),
        )

    def text_layout(self, pipe: Any) -> TextLayout:
        """The prompt's keys start after the template's tokens (the same for every prompt: checked
        per prompt by ``tokenize``); one key after the prompt is the global map's last row."""
        length = self.sequence_length(pipe)
        offset = self.templated(pipe, _REFERENCE_PROMPT, length).offset
        return TextLayout(offset=offset, prefix=0, max_tokens=length - offset - 1)

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        layout = self.text_layout(pipe)
        found = self.templated(pipe, prompt, layout.max_tokens)
        if found.offset != layout.offset:
            raise ValueError(
                f"prompt {prompt!r}: its tokens start at text key {found.offset}, not {layout.offset} "
                "(the template's text merged into it); strip the prompt"
            )
        return dataclasses.replace(found.tokenized, prompt=prompt)  # the pipeline gets the prompt as given

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        cls = DaamFlux2AttnProcessor if kind == "double" else DaamFlux2SingleAttnProcessor
        return cls(store, name, fallback)

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        raise ValueError(CONCEPTS_REFUSED)

    def call_kwargs(
        self, config: GenerationConfig, negatives: Sequence[str] | None, pipe: Any = None
    ) -> dict[str, Any]:
        if negatives is not None and any(negatives):
            raise ValueError(NEGATIVE_REFUSED)
        kwargs: dict[str, Any] = {"guidance_scale": config.guidance_scale}
        if pipe is not None:
            kwargs["max_sequence_length"] = self.sequence_length(pipe)
        return kwargs


class Flux2DevArchitecture(Flux2Architecture):
    """FLUX.2 [dev] (``Flux2Pipeline``): the same transformer with embedded guidance (one call per
    step, no negative prompt), Mistral 3 text through its processor's chat template with the
    pipeline's fixed system message: ``<s>[SYSTEM_PROMPT]SYSTEM[/SYSTEM_PROMPT][INST]PROMPT[/INST]``,
    the prompt's keys after the system message's (its tokens, like the pads, are keys, not mapped);
    the end row is ``[/INST]``. ``[IMG]`` is removed from prompts, as the pipeline does."""

    name = "flux2-dev"

    def word_tokenizer(self, pipe: Any) -> Any:
        return getattr(pipe.tokenizer, "tokenizer", pipe.tokenizer)  # a processor's, or the tokenizer itself

    def encoded(self, prompt: str) -> str:
        return prompt.replace("[IMG]", "")  # pipeline_flux2.format_input

    def render(self, pipe: Any, prompt: str) -> str:
        """The templated text ``_get_mistral_3_small_prompt_embeds`` encodes for ``prompt``."""
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        conversation = format_input(prompts=[prompt], system_message=pipe.system_message)
        return pipe.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)[0]

    def encode_options(self, pipe: Any) -> dict[str, Any]:
        """A tokenizer's ``apply_chat_template`` adds no special tokens; a processor's adds none
        when the templated text starts with the tokenizer's ``bos_token`` (Mistral's does)."""
        tokenizer = self.word_tokenizer(pipe)
        if tokenizer is pipe.tokenizer:
            return {"add_special_tokens": False}
        bos = tokenizer.bos_token
        return {"add_special_tokens": not (bos is not None and self.render(pipe, "a").startswith(bos))}

"""Z-Image (``ZImagePipeline``): an S3-DiT whose joint layers attend over one sequence, image first.

``ZImageTransformer2DModel`` refines the image tokens alone (``noise_refiner``) and the caption
alone (``context_refiner``): no text/image mixing there, so those blocks are not traced. Then every
joint single-stream layer (``layers.*``, kind ``single``) runs legacy ``Attention`` with
``ZSingleStreamAttnProcessor`` on the unified sequence, in basic mode ``[image, caption]``:

- the image's ``h·w`` patch tokens, padded to a multiple of 32 (``SEQ_MULTI_OF``) with the learned
  ``x_pad_token`` (image-side keys, never mapped),
- the caption: the Qwen3 features of every token of the chat-templated prompt (the pipeline drops
  the tokenizer's padding), padded to a multiple of 32 with the learned ``cap_pad_token`` — these
  pads are attended keys, not masked,
- and, when a batch's items differ in length (CFG's ``""`` negative, prompts of other lengths),
  zeros behind a boolean key mask ``(B, S)`` that the processor broadcasts to ``(B, 1, 1, S)``.

The recorder rebuilds q and k as the processor does (projections, RMS QK-norms, complex RoPE from
``freqs_cis`` in float32) and takes the image-query → text-key block of the model's own softmax
(``JointRecordingProcessor.attend``: the kernel's log-sum-exp without a mask, the mask applied as
the kernel applies it otherwise); the output comes from the model's own kernel, so images are
unchanged. Text keys start after the padded image; the prompt's tokens sit at the offset where the
pipeline's own tokenisation of the templated text puts them (``prompt_tokens``: template tokens and
pads are keys too, but only the prompt's tokens are mapped, plus ``<|im_end|>`` as the end row).

Guidance: ``--guidance-scale`` is the pipeline's own ``guidance_scale`` s, passed as is: CFG runs
when s > 0 as ``pos + s·(pos − neg)`` (s = standard CFG weight − 1; 0 turns CFG off, as the
distilled Turbo checkpoints are run), batched **[cond; uncond]** in one transformer call, so the
store takes the batch's first half (``conditional_first``). No negative prompt given → none is
passed (the pipeline encodes ``""``).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF, ZImageTransformerBlock

from ..chat import prompt_span, prompt_tokens_in
from ..config import GenerationConfig
from ..store import HeatMapStore
from ..words import TokenizedPrompt, prompt_of_tokens, word_scheme
from .base import Architecture, TextLayout
from .flux import PACKING, JointRecordingProcessor

MAX_SEQUENCE_LENGTH = 512  # ZImagePipeline's default (and the length it is called with here)
DEFAULT_SIZE = 1024  # px: ZImagePipeline's default height and width


def padded(length: int) -> int:
    """``length`` rounded up to ``SEQ_MULTI_OF``, as the transformer pads every segment."""
    return length + (-length) % SEQ_MULTI_OF


def rotary(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """``ZSingleStreamAttnProcessor``'s complex RoPE on ``[B, S, H, D]`` (in float32, back to ``x``'s dtype)."""
    with torch.amp.autocast("cuda", enabled=False):
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * freqs_cis.unsqueeze(2)).flatten(3).type_as(x)


def zimage_qkv(attn: Any, hidden_states: torch.Tensor, freqs_cis: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Query, key and value ``[B, S, H, D]`` as ``ZSingleStreamAttnProcessor`` builds them."""
    query, key, value = (linear(hidden_states).unflatten(-1, (attn.heads, -1)) for linear in (attn.to_q, attn.to_k, attn.to_v))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if freqs_cis is not None:
        query, key = rotary(query, freqs_cis), rotary(key, freqs_cis)
    return query, key, value


class DaamZImageAttnProcessor(JointRecordingProcessor):
    """``ZSingleStreamAttnProcessor`` that also records the image → caption attention into ``store``."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        freqs_cis: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h, w = self.store.latent_size
        image_tokens = h * w
        if not self.records():
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, freqs_cis)
        text = padded(image_tokens)  # the caption starts after the padded image
        if encoder_hidden_states is not None or hidden_states.shape[1] <= text:
            raise RuntimeError(f"expected one [image ({h}x{w}, padded to {text}), caption] sequence in {self.name}, "
                               f"got {hidden_states.shape[1]} tokens")
        query, key, value = zimage_qkv(attn, hidden_states, freqs_cis)
        if attention_mask is not None and attention_mask.ndim == 2:
            attention_mask = attention_mask[:, None, None, :]
        out = self.attend(query, key, value, attention_mask, slice(0, image_tokens), slice(text, None), True)
        output = attn.to_out[0](out.flatten(2, 3).to(query.dtype))
        return attn.to_out[1](output) if len(attn.to_out) > 1 else output


class ZImageArchitecture(Architecture):
    """Z-Image transformers (any layer, refiner and head counts), basic (text-to-image) mode."""

    name = "zimage"
    conditional_first = True  # CFG batch [cond; uncond]

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    @staticmethod
    def templated(pipe: Any, prompt: str) -> str:
        """The text the pipeline tokenises for ``prompt`` (``ZImagePipeline._encode_prompt``'s
        chat template, ``enable_thinking=True``)."""
        return pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=True,
        )

    def prompt_tokens(self, pipe: Any, prompt: str) -> tuple[int, list[str], int]:
        """(key index of the prompt's first token, the prompt's tokens, every token of the templated
        text) from the pipeline's own tokenisation of the templated text (``chat``: the tokens
        whose characters lie in the prompt; ``ValueError`` where one straddles the template)."""
        text, start = prompt_span(lambda p: self.templated(pipe, p), prompt)
        first, inside = prompt_tokens_in(pipe.tokenizer, text, start, start + len(prompt), add_special_tokens=True)
        ids = pipe.tokenizer(text, add_special_tokens=True)["input_ids"]
        return first, pipe.tokenizer.convert_ids_to_tokens([ids[i] for i in inside]), len(ids)

    def text_layout(self, pipe: Any) -> TextLayout:
        """Prompt tokens from the template's prefix tokens on (no start row: ``prefix`` 0), the
        first ``<|im_end|>`` the end row; at most what leaves the template room in 512 tokens."""
        offset, tokens, total = self.prompt_tokens(pipe, "a")
        return TextLayout(offset=offset, prefix=0, max_tokens=MAX_SEQUENCE_LENGTH - (total - len(tokens)))

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        """The prompt's tokens as the templated text tokenises (words: byte-level BPE's ``Ġ`` rule);
        ``ValueError`` (a failure record) where they are not at the layout's keys, or where the
        templated text passes the 512-token window (the pipeline would cut the template off)."""
        layout = self.text_layout(pipe)
        offset, tokens, total = self.prompt_tokens(pipe, prompt)
        if offset != layout.offset:
            raise ValueError(f"prompt {prompt!r} starts at text key {offset}, not {layout.offset}: its start merges "
                             "with the chat template")
        if total > MAX_SEQUENCE_LENGTH:
            raise ValueError(f"prompt {prompt!r}: {total} tokens with Z-Image's chat template, more than its "
                             f"{MAX_SEQUENCE_LENGTH}-token window (at most {layout.max_tokens} prompt tokens)")
        tokenizer = self.word_tokenizer(pipe)
        return prompt_of_tokens(tokenizer, prompt, tokens, len(tokens), word_scheme(tokenizer))

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        return {f"layers.{i}.attention.processor": "single" for i, block in enumerate(denoiser.layers)
                if isinstance(block, ZImageTransformerBlock)}

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        return DaamZImageAttnProcessor(store, name, fallback)

    def default_size(self, pipe: Any) -> tuple[int, int]:
        return DEFAULT_SIZE, DEFAULT_SIZE

    def map_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        cell = int(pipe.vae_scale_factor) * PACKING
        return height // cell, width // cell

    def uses_cfg(self, config: GenerationConfig) -> bool:
        """CFG batch whenever ``guidance_scale > 0`` (the pipeline's rule)."""
        return config.guidance_scale > 0

"""Qwen-Image (``QwenImagePipeline``): double-stream joint attention, text first, a chat-templated prompt.

The traced modules are the ``attn`` of every ``QwenImageTransformerBlock`` (kind ``double``; there
are no single-stream blocks): a legacy ``Attention`` with added text projections whose
``QwenDoubleStreamAttnProcessor2_0`` projects both streams, applies the QK-norms and the complex
rotary embedding (``apply_rotary_emb_qwen``, separate image and text frequencies), concatenates
**[text, image]** and calls ``dispatch_attention_fn`` with a key mask built from
``encoder_hidden_states_mask`` (text mask, then ones for the image; ``None`` when the pipeline
found no padding). The recorder rebuilds q/k exactly so, takes the image-query → text-key block of
the model's own softmax via the row log-sum-exp (``JointRecordingProcessor.attend``: the mask applied as
the kernel applies it, ``-inf`` where ``False``) and keeps the model's kernel for the output.

Text: ``Qwen2_5_VLForConditionalGeneration`` reads the prompt wrapped in the pipeline's
``prompt_template_encode`` (a fixed system message, then ``<|im_start|>user\\n{prompt}<|im_end|>
\\n<|im_start|>assistant\\n``), and the pipeline drops the first ``prompt_template_encode_start_idx``
(34) tokens of the last hidden state. Only the user prompt's tokens are mapped: they are found in
the pipeline's own tokenization of the templated text by their character offsets, and their key
offset is their index there minus the drop (0 with Qwen's tokenizer and the tiny one: the system
part is 34 tokens); ``<|im_end|>`` after them is the end row. ``--guidance-scale`` is
``true_cfg_scale`` (the pipeline's default 4.0): real CFG, two transformer calls per step, the
conditional one first (the store keeps a step's first call), and only when a negative prompt is
given, as in the pipeline; guidance-distilled checkpoints (``guidance_embeds``) get it as
``guidance_scale`` instead and take no negative prompt.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from diffusers.models.transformers.transformer_flux import _get_projections
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock, apply_rotary_emb_qwen

from ..chat import prompt_tokens_in
from ..config import GenerationConfig
from ..store import HeatMapStore
from ..words import TokenizedPrompt, prompt_of_tokens
from .base import TextLayout
from .flux import DaamFluxAttnProcessor, FluxArchitecture, joint_output

MAX_SEQUENCE_LENGTH = 512  # QwenImagePipeline's default max_sequence_length (text keys after the drop)
_PROBE = "a"  # a prompt whose tokens start where any prompt's do
CONCEPTS_REFUSED = (
    "concept maps (ConceptAttention) are offered for SD3 and Flux, not Qwen-Image's blocks: leave out --concept-maps "
    "(--label-maps daam)"
)


def qwen_joint_qkv(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, rotary: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value ``[B, S, H, D]`` as ``QwenDoubleStreamAttnProcessor2_0`` builds them:
    both streams projected, QK-normed and rotated apart, then concatenated text first."""
    head_dim = attn.inner_dim // attn.heads
    projections = _get_projections(attn, hidden_states, encoder_hidden_states)
    query, key, value, text_query, text_key, text_value = (t.unflatten(-1, (-1, head_dim)) for t in projections)
    norms = (attn.norm_q, attn.norm_k, attn.norm_added_q, attn.norm_added_k)
    query, key, text_query, text_key = (
        x if norm is None else norm(x) for x, norm in zip((query, key, text_query, text_key), norms)
    )
    if rotary is not None:
        image_freqs, text_freqs = rotary
        query, key = (apply_rotary_emb_qwen(x, image_freqs, use_real=False) for x in (query, key))
        text_query, text_key = (apply_rotary_emb_qwen(x, text_freqs, use_real=False) for x in (text_query, text_key))
    return (torch.cat([text_query, query], dim=1), torch.cat([text_key, key], dim=1),
            torch.cat([text_value, value], dim=1))


class DaamQwenAttnProcessor(DaamFluxAttnProcessor):
    """``QwenDoubleStreamAttnProcessor2_0`` that also records the image → text attention; the
    output is the model's own (same q/k/v, key mask and ``dispatch_attention_fn`` backend)."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        h, w = self.store.latent_size
        if encoder_hidden_states is None or attention_mask is not None or not self.records():
            return self.fallback(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                                 attention_mask, image_rotary_emb)  # the original raises for what it refuses
        if hidden_states.shape[1] != h * w:
            raise RuntimeError(f"expected {h * w} image tokens ({h}x{w}), got {hidden_states.shape[1]} in {self.name}")
        mask = None
        if encoder_hidden_states_mask is not None:
            image = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            mask = torch.cat([encoder_hidden_states_mask, image], dim=1)[:, None, None, :]
        query, key, value = qwen_joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        text = encoder_hidden_states.shape[1]
        out = self.attend(query, key, value, mask, slice(text, None), slice(0, text), True)
        return joint_output(attn, out, encoder_hidden_states, query.dtype)


def template_tokens(pipe: Any, prompt: str) -> tuple[list[str], int]:
    """The user prompt's tokens in the pipeline's own tokenization of its templated text (as
    ``_get_qwen_prompt_embeds`` tokenizes it) and the index of the first; ``ValueError`` where a
    token straddles the prompt's edge (a prompt opening with a newline joins the template's)."""
    template = pipe.prompt_template_encode
    start = template.index("{}")
    text = template.format(prompt)
    encode = {"max_length": pipe.tokenizer_max_length + pipe.prompt_template_encode_start_idx, "truncation": True}
    first, inside = prompt_tokens_in(pipe.tokenizer, text, start, start + len(prompt), **encode)
    tokens = pipe.tokenizer(text, **encode).tokens()
    return [tokens[i] for i in inside], first

class QwenImageArchitecture(FluxArchitecture):
    """Qwen-Image transformers (any block and head counts)."""

    name = "qwenimage"
    block_kinds = ((QwenImageTransformerBlock, "double"),)
    takes_negative_prompts = True

    def word_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer

    def sequence_length(self, pipe: Any) -> int:
        return MAX_SEQUENCE_LENGTH

    def text_layout(self, pipe: Any) -> TextLayout:
        """The prompt's first key: its index in the templated tokens minus the pipeline's drop."""
        _, first = template_tokens(pipe, _PROBE)
        offset = first - int(pipe.prompt_template_encode_start_idx)
        if offset < 0:
            raise ValueError(
                f"the pipeline drops {pipe.prompt_template_encode_start_idx} template tokens but its tokenizer puts "
                f"the prompt at token {first}: the drop would cut the prompt (prompt_template_encode_start_idx)"
            )
        return TextLayout(offset=offset, prefix=0, max_tokens=self.sequence_length(pipe) - offset - 1)

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        tokens, first = template_tokens(pipe, prompt)
        layout = self.text_layout(pipe)
        if first - int(pipe.prompt_template_encode_start_idx) != layout.offset:
            raise ValueError(f"prompt {prompt!r} starts at template token {first}, not where prompts do")
        return prompt_of_tokens(pipe.tokenizer, prompt, tokens, layout.max_tokens)

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        return DaamQwenAttnProcessor(store, name, fallback)

    def call_prompts(
        self, prompts: list[str], negatives: list[str] | None, per_prompt: int
    ) -> tuple[list[str], list[str] | None, int]:
        """Each prompt (and negative prompt) repeated ``per_prompt`` times, one image each:
        ``encode_prompt`` of diffusers 0.42 tiles a padded batch's key mask prompt-major-last
        (``repeat(1, n, 1)`` on a 2-D mask) but its embeddings image-by-prompt, so with
        ``num_images_per_prompt`` > 1 and prompts of different lengths images get another
        prompt's mask; repeated prompts give every image its own (the same latents: one
        generator per image either way)."""
        prompts = [text for text in prompts for _ in range(per_prompt)]
        if negatives is not None:
            negatives = [text for text in negatives for _ in range(per_prompt)]
        return prompts, negatives, 1

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        raise ValueError(CONCEPTS_REFUSED)

    def call_kwargs(
        self, config: GenerationConfig, negatives: Sequence[str] | None, pipe: Any = None
    ) -> dict[str, Any]:
        """``--guidance-scale`` as ``true_cfg_scale`` (CFG only with a negative prompt, as the
        pipeline runs it), or as ``guidance_scale`` for a guidance-distilled transformer."""
        kwargs: dict[str, Any] = {"max_sequence_length": self.sequence_length(pipe)}
        if pipe is not None and self.denoiser(pipe).config.guidance_embeds:
            if negatives is not None and any(negatives):
                raise ValueError("this Qwen-Image transformer is guidance-distilled (guidance_embeds): "
                                 "it takes no negative prompt here; drop it")
            return {**kwargs, "guidance_scale": config.guidance_scale}
        if negatives is not None:
            kwargs["negative_prompt"] = negatives
        return {**kwargs, "true_cfg_scale": config.guidance_scale}

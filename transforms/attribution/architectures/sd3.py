"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): MMDiT joint attention, image tokens first.

Traced modules: the joint attention ``attn`` of every ``JointTransformerBlock`` (kind
``joint``), the modules with text projections (``add_k_proj``). SD3.5's dual-attention ``attn2``
modules attend over image tokens only and keep their processor. ``DaamJointAttnProcessor`` ports
diffusers' ``JointAttnProcessor2_0`` (qk-norm of SD3.5, ``context_pre_only`` of the last block)
and records the image-query → text-key slice of its softmax (``joint.record_text_maps``) from the
query and key its fused kernel receives; the output still comes from that kernel.

Text keys: the joint sequence is ``[image ; context]`` and the context is ``[77 CLIP positions
(CLIP-L ⊕ CLIP-G features, zero-padded to the T5 width) ; max_sequence_length T5 positions]``.
Which encoder's tokens are mapped:

- **T5** (``tokenizer_3``) when the pipeline has ``text_encoder_3``: its sentencepiece tokens
  define the words (keys from index 77 on, no start token, ``</s>`` after the prompt). T5 sees
  the longest window (255 prompt tokens) and carries SD3's word-level conditioning; CLIP's
  positions at the same time carry per-token features too, but two tokenisations of one prompt
  cannot share one row per token.
- **CLIP-L** (``tokenizer``) when the folder was saved without T5 (``text_encoder_3=None``: the
  pipeline fills the T5 part with zeros, which have no tokens): keys 1…n after CLIP's start token,
  75 prompt tokens, checked to split like CLIP-G's tokenizer (one key per position for both).

CFG batches ``[unconditional ; conditional]`` as SD does; maps are on the patch grid (latent /
``patch_size``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from ..joint import attention_with_lse, record_text_maps
from ..processor import RecordingProcessor
from ..store import HeatMapStore, query_length
from ..words import TokenizedPrompt
from .base import Architecture, TextLayout
from .unet import UNetArchitecture

if TYPE_CHECKING:
    from ..config import GenerationConfig

MAX_SEQUENCE_LENGTH = 256  # the pipeline's default T5 window (``max_sequence_length``)
JOINT_KIND = "joint"


def _project(
    attn: Any, states: torch.Tensor, projections: tuple[Any, Any, Any], norms: tuple[Any, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value ``(batch, heads, tokens, head_dim)`` of ``states``, q/k normalised."""
    batch = states.shape[0]
    query, key, value = (projection(states) for projection in projections)
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    norm_q, norm_k = norms
    if norm_q is not None:
        query = norm_q(query)
    if norm_k is not None:
        key = norm_k(key)
    return query, key, value


class DaamJointAttnProcessor(RecordingProcessor):
    """``JointAttnProcessor2_0`` that also records the image → text slice of its probabilities.

    Calls without text (``encoder_hidden_states=None``) or that the store does not want
    (unselected step) go to ``fallback``, the module's original processor.
    """

    store: HeatMapStore

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        daam = self.record and encoder_hidden_states is not None and self.store.wants(query_length(hidden_states))
        concepts = self.concepts is not None and encoder_hidden_states is not None and self.concepts.active(self.name)
        if not (daam or concepts):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        batch, image_len = hidden_states.shape[:2]
        image_states = hidden_states
        query, key, value = _project(
            attn, hidden_states, (attn.to_q, attn.to_k, attn.to_v), (attn.norm_q, attn.norm_k)
        )
        context = _project(
            attn,
            encoder_hidden_states,
            (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj),
            (attn.norm_added_q, attn.norm_added_k),
        )
        query, key, value = (torch.cat([ours, theirs], dim=2) for ours, theirs in zip((query, key, value), context))
        lse = None
        if daam:  # the kernel's LSE (unused under --joint-normalize text, and free)
            hidden_states, lse = attention_with_lse(query, key, value)
        else:
            hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        if daam:
            record_text_maps(self.store, self.name, query, key, slice(0, image_len), slice(image_len, None), lse)
        if concepts:
            self.concepts.attend(
                self.name, attn, key.transpose(1, 2), value.transpose(1, 2), hidden_states.transpose(1, 2),
                slice(0, image_len), image_states,
            )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1])
        hidden_states = hidden_states.to(query.dtype)
        hidden_states, encoder_hidden_states = hidden_states[:, :image_len], hidden_states[:, image_len:]
        if not attn.context_pre_only:
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states, encoder_hidden_states


def has_t5(pipe: Any) -> bool:
    """Whether the pipeline encodes with T5 (a folder saved with ``text_encoder_3=None`` does not)."""
    return getattr(pipe, "text_encoder_3", None) is not None and getattr(pipe, "tokenizer_3", None) is not None


class SD3Architecture(Architecture):
    """SD3 / SD3.5 MMDiT transformers (see the module docstring for the text keys)."""

    name = "sd3"
    _clip = UNetArchitecture()  # the CLIP-only layout and its two-tokenizer check

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def word_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer_3 if has_t5(pipe) else pipe.tokenizer

    def text_layout(self, pipe: Any) -> TextLayout:
        if not has_t5(pipe):
            return super().text_layout(pipe)
        return TextLayout(offset=int(pipe.tokenizer.model_max_length), prefix=0, max_tokens=MAX_SEQUENCE_LENGTH - 1)

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        return super().tokenize(pipe, prompt) if has_t5(pipe) else self._clip.tokenize(pipe, prompt)

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        return {
            f"{module_name}.processor": JOINT_KIND
            for module_name, module in denoiser.named_modules()
            if getattr(module, "add_k_proj", None) is not None and hasattr(module, "set_processor")
        }

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        return DaamJointAttnProcessor(store, name, fallback)

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        return [(f"transformer_blocks.{i}.attn.processor", b) for i, b in enumerate(denoiser.transformer_blocks)]

    def concept_temb(self, denoiser: Any, kwargs: dict[str, Any]) -> None:
        """``None``: the concepts are modulated by the prompt's ``temb`` (the official SD3 port)."""
        return None

    def concept_embeddings(self, pipe: Any, names: Sequence[str]) -> torch.Tensor:
        names = list(names)
        embeds, _, _, _ = pipe.encode_prompt(
            prompt=names, prompt_2=names, prompt_3=names, device=pipe._execution_device,
            do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        return embeds

    def map_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        latent_h, latent_w = super().map_grid(pipe, height, width)
        patch = int(pipe.transformer.config.patch_size)
        return latent_h // patch, latent_w // patch

    def call_kwargs(
        self, config: "GenerationConfig", negatives: Sequence[str] | None, pipe: Any = None
    ) -> dict[str, Any]:
        return {**super().call_kwargs(config, negatives, pipe), "max_sequence_length": MAX_SEQUENCE_LENGTH}

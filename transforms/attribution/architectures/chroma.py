"""Chroma (``ChromaPipeline``): Flux's blocks with an attention mask, T5 only, guidance as two calls.

The transformer is Flux-shaped (``ChromaTransformerBlock`` double-stream, ``ChromaSingleTransformerBlock``
single-stream, both on ``FluxAttention`` + ``FluxAttnProcessor``), so the Flux recorder traces it
(``DaamFluxAttnProcessor``) with one difference: the pipeline always passes a key mask (the
prompt's T5 tokens, ``</s>`` and one pad; image tokens all kept), which each block expands to a
``(B, 1, L, L)`` outer product. The pipeline builds it in the latents' float dtype, so SDPA *adds*
it (0 or 1 per key: in diffusers 0.42 the pads are not removed, only kept 1 lower); the recorder
hands the mask to the model's own kernel for the output and applies it to its own scores the
way the kernel does (``joint._masked``: added if float, ``-inf`` where ``False`` if boolean), so the
image → text slice is the model's softmax (the fused kernel's log-sum-exp is not used).

Words and keys are T5's (``tokenizer``): pieces at keys ``0 … n-1``, ``</s>`` at ``n``. Guidance
is real CFG run as **two transformer calls** per step, the conditional one first: the store keeps a
step's first call only (``HeatMapStore.wants``), so the maps are the prompt's. No negative prompt
given → none passed (the pipeline encodes ``""``). ConceptAttention is not offered here (its
modulation vector comes from the approximator, not Flux's ``time_text_embed``).
"""

from __future__ import annotations

from typing import Any

from diffusers.models.transformers.transformer_chroma import ChromaSingleTransformerBlock, ChromaTransformerBlock

from .flux import FluxArchitecture

_BLOCK_KINDS = ((ChromaTransformerBlock, "double"), (ChromaSingleTransformerBlock, "single"))
CONCEPTS_REFUSED = (
    "concept maps (ConceptAttention) are offered for SD3 and Flux: Chroma's blocks take their modulation from "
    "its approximator, which the concept stream does not follow; leave out --concept-maps (--label-maps daam)"
)


class ChromaArchitecture(FluxArchitecture):
    """Chroma transformers (any block and head counts)."""

    name = "chroma"
    block_kinds = _BLOCK_KINDS
    takes_negative_prompts = True  # real CFG, its two calls told apart by the store

    def word_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        raise ValueError(CONCEPTS_REFUSED)

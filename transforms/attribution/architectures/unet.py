"""UNet denoisers with cross-attention: SD 1.x/2.x (DAAM's reference) and SDXL.

Cross-attention modules (``attn2``, ``is_cross_attention``) get ``DaamCrossAttnProcessor``; the
text keys are the 77 CLIP positions (SDXL concatenates its two encoders along features, so the
keys are the same 77 positions and the words come from the first tokenizer, checked equal to the
second's for every prompt).
"""

from __future__ import annotations

from typing import Any

from ..processor import DaamCrossAttnProcessor
from ..store import HeatMapStore
from ..words import END_OF_WORD, TokenizedPrompt
from .base import Architecture

UNET_KINDS = ("down", "mid", "up")


def unet_kind(processor_name: str) -> str:
    """``down``, ``mid`` or ``up`` from a UNet processor name (``other`` for anything else)."""
    head = processor_name.split(".", 1)[0]
    return next((kind for kind in UNET_KINDS if head == f"{kind}_blocks" or head == f"{kind}_block"), "other")


def key_pieces(tokens: list[str]) -> list[str]:
    """The text each token position holds (CLIP's end-of-word marker dropped)."""
    return [token.removesuffix(END_OF_WORD) for token in tokens]


class UNetArchitecture(Architecture):
    """SD 1.x/2.x and SDXL UNets."""

    name = "unet"

    def denoiser(self, pipe: Any) -> Any:
        return pipe.unet

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        tokenized = super().tokenize(pipe, prompt)
        second = getattr(pipe, "tokenizer_2", None)
        if second is not None:
            limit = self.text_layout(pipe).max_tokens
            theirs = second.tokenize(prompt.lower())[:limit]
            ours = pipe.tokenizer.tokenize(prompt.lower())[:limit]
            # key positions must agree, not piece strings: SDXL-base's second tokenizer pads with
            # "!", a special token there, so "art!" ends in "!" beside the first one's "!</w>"
            if key_pieces(theirs) != key_pieces(ours):
                raise ValueError(
                    "the two text encoders' tokenizers split this prompt into different key positions "
                    f"({ours[:8]} vs {theirs[:8]}): its maps would not match the second encoder's keys"
                )
        return tokenized

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        names = {}
        for module_name, module in denoiser.named_modules():
            if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
                name = f"{module_name}.processor"
                names[name] = unet_kind(name)
        return names

    def processor(self, name: str, kind: str, store: HeatMapStore, fallback: Any) -> Any:
        return DaamCrossAttnProcessor(store, name, fallback)

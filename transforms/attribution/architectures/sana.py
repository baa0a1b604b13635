"""Sana (``SanaPipeline``): a cross-attention DiT on Gemma-2 text, a complex human instruction.

Each ``SanaTransformerBlock`` has a *linear* self-attention ``attn1`` (no softmax: not traced)
and a cross-attention ``attn2`` over the text (``SanaAttnProcessor2_0``, SDPA): DAAM proper, as
for PixArt (kind ``cross``), with the transformer's −10000 bias on padded keys added before the
recorder's softmax and the QK-norms of the module where it has them (Sana 1.5).

Text keys. The pipeline lower-cases and strips the prompt (``_text_preprocessing``; its call's
``clean_caption`` is off), and by default prepends the **complex human instruction** (CHI: a
paragraph ending in ``"User Prompt: "``) to it; it tokenises ``CHI + prompt`` padded on the right
to ``len(tokens(CHI)) + 300 - 2`` (Gemma prepends ``<bos>``, appends no ``<eos>``) and keeps
``select_index = [0] + last 299`` positions: ``<bos>`` at key 0, then the tail of the window.
``tokens(CHI)`` ends in a lone ``▁`` (the instruction's last space) that, in ``CHI + prompt``,
joins the prompt's first character (``▁a``), so the kept tail starts exactly at the prompt: its
tokens sit at keys ``1 … n``, the CHI's tokens are all cut away but ``<bos>``, pads follow (masked).
Without the CHI (``complex_human_instruction=None``) the window is ``<bos>``, prompt, pads: the same
keys. ``tokenize`` rebuilds the kept key ids as the pipeline builds them and refuses a prompt whose
tokens would sit elsewhere (a first character the tokenizer does not join to the space). Only the
prompt's tokens are mapped (``<bos>`` is the global map's prefix row, as CLIP's start token); a
prompt fits 298 tokens (one key is left for the row after it). Guidance: CFG 4.5 batched
``[uncond; cond]``; no negative prompt given → none passed (the pipeline encodes ``""``).

Resolution binning (on by default) uses Sana's own tables (``sample_size`` 16/32/64/128 → the
512/1024/2048/4096 px bins: the VAE ``AutoencoderDC`` has factor 32, the transformer patch 1);
as for PixArt, off-bin sizes are refused and folders without a table run with binning off.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..words import TokenizedPrompt, tokenize_prompt
from .base import TextLayout
from .pixart import PixArtArchitecture, call_default, default_max_sequence_length, encoded_text


def sana_bin_tables() -> dict[int, dict[str, list[float]]]:
    """Sana's aspect-ratio bins by transformer ``sample_size`` (``pipeline_sana.py — __call__``)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    return {16: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_4096_BIN}


def encoder_key_ids(tokenizer: Any, text: str, instruction: list[str] | None, max_length: int) -> tuple[list[int], int]:
    """The token ids at the transformer's text keys for one preprocessed prompt ``text``, built as
    ``SanaPipeline._get_gemma_prompt_embeds`` and ``encode_prompt``'s ``select_index`` build them,
    and the key of the prompt's first token (where ``CHI + text`` stops agreeing with the CHI's
    own tokens, mapped through ``select_index``)."""
    tokenizer.padding_side = "right"  # as the pipeline forces
    chi = "\n".join(instruction) if instruction else ""
    head = tokenizer(chi).input_ids  # <bos> and the CHI's tokens ([<bos>] without the CHI)
    length = len(head) + max_length - 2 if instruction else max_length  # ``num_chi_prompt_tokens`` + 298
    ids = tokenizer(chi + text, padding="max_length", max_length=length, truncation=True).input_ids
    start = next((i for i, (a, b) in enumerate(zip(head, ids)) if a != b), len(head))
    keys = [ids[0]] + ids[length - max_length + 1 :]
    return keys, start - (length - max_length)


class SanaArchitecture(PixArtArchitecture):
    """Sana transformers (any depth, width, head counts and sample size); ``instruction``: whether
    the pipeline's complex human instruction is on (its default) or passed as ``None``."""

    name = "sana"
    label = "Sana"

    def __init__(self, instruction: bool = True) -> None:
        self.instruction = instruction

    def text_layout(self, pipe: Any) -> TextLayout:
        return TextLayout(offset=1, prefix=1, max_tokens=default_max_sequence_length(pipe) - 2)

    def complex_human_instruction(self, pipe: Any) -> list[str] | None:
        """The instruction the pipeline's call prepends (its default), ``None`` when off."""
        if not self.instruction:
            return None
        return list(call_default(pipe, "complex_human_instruction", None) or []) or None

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        text = encoded_text(pipe, prompt)
        layout = self.text_layout(pipe)
        tokenized = tokenize_prompt(pipe.tokenizer, text, layout.max_tokens)
        keys, offset = encoder_key_ids(
            pipe.tokenizer, text, self.complex_human_instruction(pipe), default_max_sequence_length(pipe)
        )
        if offset != layout.offset:
            raise ValueError(
                f"Sana's instruction and this prompt tokenise together into other keys (the prompt's at key "
                f"{offset}, not {layout.offset}): its maps would not be its tokens'"
            )
        n = len(tokenized.token_ids)
        ours = keys[offset : offset + n]
        decode = pipe.tokenizer.decode
        if ours[1:] != tokenized.token_ids[1:] or decode(ours[:1]).strip() != decode(tokenized.token_ids[:1]).strip():
            raise ValueError(
                "Sana's instruction and this prompt tokenise together into other tokens than the prompt alone "
                f"({pipe.tokenizer.convert_ids_to_tokens(ours[:4])}…): its maps would not be its words'"
            )
        # the ids the keys hold (the instruction's last space joins the first token: ``▁a``, not ``a``)
        return dataclasses.replace(tokenized, prompt=prompt, token_ids=ours)

    def bin_tables(self) -> dict[int, dict[str, list[float]]]:
        return sana_bin_tables()

    def call_kwargs(self, config: Any, negatives: Any, pipe: Any = None) -> dict[str, Any]:
        kwargs = super().call_kwargs(config, negatives, pipe)
        if not self.instruction:
            kwargs["complex_human_instruction"] = None
        return kwargs

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
keys. ``tokenize`` rebuilds the kept keys as the pipeline builds them and reads the prompt's tokens
from them (key 1 up to the padding): behind the CHI they are the pieces of ``" " + prompt`` in
context, which can differ from the prompt's alone (``▁word`` vs ``w`` ``ord``). A first character
the tokenizer does not join to the space leaves the lone ``▁`` at key 1: it joins the first word,
as sentencepiece's bare ``▁`` does; any other CHI token left at key 1 is refused (a failure
record), never shifted. Only the prompt's tokens are mapped (``<bos>`` is the global map's prefix
row, as CLIP's start token); a prompt fits 298 tokens (one key is left for the row after it,
a pad). Guidance: CFG 4.5 batched
``[uncond; cond]``; no negative prompt given → none passed (the pipeline encodes ``""``).

Resolution binning (on by default) uses Sana's own tables (``sample_size`` 16/32/64/128 → the
512/1024/2048/4096 px bins: the VAE ``AutoencoderDC`` has factor 32, the transformer patch 1);
as for PixArt, off-bin sizes are refused and folders without a table run with binning off.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..words import TokenizedPrompt, prompt_of_tokens
from .base import TextLayout
from .pixart import PixArtArchitecture, call_default, default_max_sequence_length, encoded_text


def sana_bin_tables() -> dict[int, dict[str, list[float]]]:
    """Sana's aspect-ratio bins by transformer ``sample_size`` (``pipeline_sana.py — __call__``)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    return {16: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_4096_BIN}


@dataclasses.dataclass(frozen=True)
class TextWindow:
    """A preprocessed prompt's text keys as ``SanaPipeline`` builds them: ``keys`` (token ids after
    ``select_index``) and their attention ``mask``, ``offset`` (the key of the prompt's first token:
    where ``CHI + text`` stops agreeing with the CHI's own tokens) and ``tail`` (every token id
    from key 1 on, before truncation and padding: the prompt's tokens, after a lone space the CHI
    may leave at key 1)."""

    keys: list[int]
    mask: list[int]
    offset: int
    tail: list[int]


def encoder_window(tokenizer: Any, text: str, instruction: list[str] | None, max_length: int) -> TextWindow:
    """The text keys of one preprocessed prompt ``text``, built as ``_get_gemma_prompt_embeds`` and
    ``encode_prompt``'s ``select_index = [0] + last (max_length - 1)`` build them (``instruction``:
    the complex human instruction, ``None`` when off)."""
    tokenizer.padding_side = "right"  # as the pipeline forces
    chi = "\n".join(instruction) if instruction else ""
    head = tokenizer(chi).input_ids  # <bos> and the CHI's tokens ([<bos>] without the CHI)
    length = len(head) + max_length - 2 if instruction else max_length  # ``num_chi_prompt_tokens`` + 298
    window = tokenizer(chi + text, padding="max_length", max_length=length, truncation=True)
    full = tokenizer(chi + text).input_ids
    start = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), len(head))
    first = length - max_length + 1  # the index of key 1
    tail = full[first:]
    if tail and tail[-1] == tokenizer.eos_token_id and getattr(tokenizer, "add_eos_token", False):
        tail = tail[:-1]  # an end token the tokenizer appends (Gemma's does not)
    kept = [0, *range(first, length)]
    ids, mask = window.input_ids, window.attention_mask
    return TextWindow([ids[i] for i in kept], [mask[i] for i in kept], start - first + 1, tail)


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
        """The prompt's tokens as its keys hold them: from key 1 on, up to the padding (behind the
        CHI its first word's pieces can differ from the prompt's alone: ``▁word``, not ``w`` ``ord``);
        a lone space the CHI leaves at key 1 (a first character that does not join it) joins the
        first word, as sentencepiece's bare ``▁`` does."""
        tokenizer = pipe.tokenizer
        window = encoder_window(tokenizer, encoded_text(pipe, prompt), self.complex_human_instruction(pipe),
                                default_max_sequence_length(pipe))
        lone_space = window.offset == 2 and not tokenizer.decode(window.keys[1:2]).strip()
        if window.offset != 1 and not lone_space:
            raise ValueError(
                f"Sana's instruction and this prompt tokenise together into other keys (the prompt's at key "
                f"{window.offset}, not 1): its maps would not be its tokens'"
            )
        tokenized = prompt_of_tokens(
            tokenizer, prompt, tokenizer.convert_ids_to_tokens(window.tail), self.text_layout(pipe).max_tokens
        )
        n = len(tokenized.token_ids)
        if window.keys[1 : n + 1] != tokenized.token_ids or not all(window.mask[: n + 1]):
            raise ValueError("Sana's text keys do not hold this prompt's tokens where its window says: refused")
        return tokenized

    def bin_tables(self) -> dict[int, dict[str, list[float]]]:
        return sana_bin_tables()

    def call_kwargs(self, config: Any, negatives: Any, pipe: Any = None) -> dict[str, Any]:
        kwargs = super().call_kwargs(config, negatives, pipe)
        if not self.instruction:
            kwargs["complex_human_instruction"] = None
        return kwargs

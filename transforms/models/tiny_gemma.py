"""A Gemma-style BPE tokenizer built offline, for the built-in tiny Sana.

Real Sana pipelines tokenise with Gemma-2's tokenizer, which cannot be downloaded here. The tiny
model gets a real ``transformers.GemmaTokenizer`` (a ``tokenizers`` BPE model with byte
fallback, spaces normalised to ``▁``, no prefix space, ``<bos>`` prepended, no ``<eos>``
appended, as Gemma's) whose merges are *built*, not trained: every word of the vendored CLIP
BPE vocabulary (in CLIP's merge order, the most frequent first) is spelt left to right, ``▁``
first (``▁`` ``c`` → ``▁c``, ``▁c`` ``a`` → ``▁ca`` …), and again without ``▁`` (a text's first
word); the most frequent words are also capitalised. Every printable ASCII character is a
piece, alone and after ``▁``, so a space always joins the character after it (as Gemma's
``▁a``); other characters fall back to bytes. Deterministic, no corpus.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

from transforms.attribution.words import END_OF_WORD, WORD_START

GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0…4 as in Gemma
_WORDS = 3000
_CAPITALISED = 500


def _spell(piece: str, merges: dict[tuple[str, str], None], vocab: dict[str, None]) -> None:
    """Add the left-to-right merges (and their pieces) that build ``piece`` from its characters."""
    current = piece[0]
    for char in piece[1:]:
        merges.setdefault((current, char), None)
        current += char
        vocab.setdefault(current, None)


@lru_cache(maxsize=1)
def gemma_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (specials, bytes, characters, word pieces) and BPE merges (``▁`` words first)."""
    from .tiny_sd import clip_vocab_and_merges

    _, clip_merges = clip_vocab_and_merges()
    words: list[str] = []
    for left, right in clip_merges:
        token = left + right
        text = token[: -len(END_OF_WORD)]
        if token.endswith(END_OF_WORD) and text.isascii() and text.isalpha() and len(text) > 1:
            words.append(text)
            if len(words) == _WORDS:
                break
    words += [w.capitalize() for w in words[:_CAPITALISED]]
    vocab: dict[str, None] = dict.fromkeys(GEMMA_SPECIALS)
    vocab.update(dict.fromkeys(f"<0x{b:02X}>" for b in range(256)))
    characters = string.ascii_letters + string.digits + string.punctuation + "\n"
    vocab.update(dict.fromkeys([WORD_START, *characters]))
    merges: dict[tuple[str, str], None] = {}
    for char in characters:  # a space joins any character after it
        _spell(WORD_START + char, merges, vocab)
    for word in words:  # words after a space first: they win over the bare spellings inside them
        _spell(WORD_START + word, merges, vocab)
    for word in words:
        _spell(word, merges, vocab)
    return {piece: i for i, piece in enumerate(vocab)}, list(merges)


def build_gemma_tokenizer(model_max_length: int = 8192) -> Any:
    """A ``transformers.GemmaTokenizer`` over ``gemma_vocab_and_merges`` (padding on the right, as
    the Sana pipeline forces)."""
    from transformers import GemmaTokenizer

    vocab, merges = gemma_vocab_and_merges()
    return GemmaTokenizer(
        vocab=vocab, merges=merges, model_max_length=model_max_length, padding_side="right",
        add_bos_token=True, add_eos_token=False,
    )

"""A T5-style sentencepiece (Unigram) tokenizer built offline, for the built-in tiny SD3 and Flux.

Real SD3 and Flux pipelines tokenise with T5's sentencepiece model, which cannot be downloaded
here. The tiny models get a real ``transformers.T5Tokenizer`` (a ``tokenizers`` Unigram model,
``▁`` word starts, ``</s>`` appended, case kept) whose pieces are *built*, not trained: the
words and word pieces of the vendored CLIP BPE vocabulary, scored by their merge rank (CLIP's
merges are learnt in frequency order), plus capitalised forms of the most frequent words and
every printable ASCII character as a fallback piece. Deterministic, no corpus, no
``sentencepiece`` package; words outside the list split into several pieces like T5's do
(``"hotdog"`` → ``▁hot`` ``dog``).
"""

from __future__ import annotations

import math
import string
from functools import lru_cache
from typing import Any

from transforms.attribution.words import END_OF_WORD, WORD_START

T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
_MAX_WORD_PIECES = 12000
_CAPITALISED = 2000


@lru_cache(maxsize=1)
def t5_vocab() -> tuple[tuple[str, float], ...]:
    """The Unigram pieces and log-probability scores (specials first, then by rank)."""
    from .tiny_sd import clip_vocab_and_merges

    _, merges = clip_vocab_and_merges()
    pieces: dict[str, float] = {}

    def add(piece: str, rank: int) -> None:
        if piece not in pieces:
            pieces[piece] = -math.log(2.0 + rank)

    words = 0
    for rank, merge in enumerate(merges):
        token = "".join(merge)
        whole = token.endswith(END_OF_WORD)
        text = token[: -len(END_OF_WORD)] if whole else token
        if not text.isascii() or not text.isalnum():
            continue
        add(WORD_START + text, rank)
        add(text, rank + 1)
        if whole and words < _CAPITALISED and text.isalpha():
            add(WORD_START + text.capitalize(), rank + 1)
        words += whole
        if len(pieces) >= 2 * _MAX_WORD_PIECES:
            break
    fallback = len(merges) + 1
    for char in string.ascii_letters + string.digits + string.punctuation:
        add(char, fallback)
        add(WORD_START + char, fallback)
    add(WORD_START, fallback)
    specials = [(s, 0.0) for s in T5_SPECIALS]
    return tuple(specials + sorted(pieces.items(), key=lambda item: -item[1]))


def build_t5_tokenizer(model_max_length: int = 512) -> Any:
    """A ``transformers.T5Tokenizer`` over ``t5_vocab`` (no sentinel tokens)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(t5_vocab()), extra_ids=0, model_max_length=model_max_length)

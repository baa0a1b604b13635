"""Prompt tokens, word spans and DAAM's token-merge rules (no Beam, no NLP library)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

END_OF_WORD = "</w>"


@dataclass(frozen=True)
class WordSpan:
    """A word of the prompt: its text and its token span ``[start, end)`` in ``tokens``."""

    word: str
    start: int
    end: int


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt as the text encoder sees it (start/end tokens excluded).

    ``tokens`` are the tokenizer's tokens of the lower-cased prompt with ``</w>`` removed (DAAM's
    convention, used to match words); ``display_tokens`` are the same tokens decoded to text
    (readable for non-ASCII); ``truncated`` says tokens beyond the model's window were dropped.
    """

    prompt: str
    tokens: list[str]
    display_tokens: list[str]
    token_ids: list[int]
    words: list[WordSpan]
    truncated: bool
    num_tokens_total: int


def _clean(token: str) -> str:
    return token[: -len(END_OF_WORD)] if token.endswith(END_OF_WORD) else token


def max_prompt_tokens(tokenizer: Any) -> int:
    """Prompt tokens that fit in the text encoder window (77 - start - end = 75 for CLIP)."""
    return int(tokenizer.model_max_length) - 2


def tokenize_prompt(tokenizer: Any, prompt: str) -> TokenizedPrompt:
    """Tokenise ``prompt`` like DAAM and split it into words with their token spans.

    A word ends at a token carrying the end-of-word marker, so ``"Cat,"`` gives the words ``cat``
    and ``,``. Tokens past the window are dropped and ``truncated`` is set.
    """
    raw = tokenizer.tokenize(prompt.lower())
    limit = max_prompt_tokens(tokenizer)
    kept = raw[:limit]
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(kept)]
    words: list[WordSpan] = []
    start = 0
    for i, token in enumerate(kept):
        if token.endswith(END_OF_WORD) or i == len(kept) - 1:
            text = tokenizer.decode(ids[start : i + 1]).strip()
            words.append(WordSpan(word=text, start=start, end=i + 1))
            start = i + 1
    return TokenizedPrompt(
        prompt=prompt,
        tokens=[_clean(t) for t in kept],
        display_tokens=[tokenizer.decode([i]).strip() for i in ids],
        token_ids=ids,
        words=words,
        truncated=len(raw) > limit,
        num_tokens_total=len(raw),
    )


def token_merge_indices(tokenizer: Any, tokens: list[str], word: str) -> list[int]:
    """Global-map rows of every occurrence of ``word``'s token sequence in ``tokens``.

    DAAM semantics: ``word`` is lower-cased and tokenised like the prompt; each contiguous match
    contributes all its token positions (+1 for the start-token row). Raises ``ValueError`` if
    the word is not a token sequence of the prompt (``dog`` in "a hotdog": ``hotdog`` is one token).
    """
    query = [_clean(t) for t in tokenizer.tokenize(word.lower())]
    if not query:
        raise ValueError(f"word {word!r} has no tokens")
    rows: list[int] = []
    for start in range(len(tokens) - len(query) + 1):
        if tokens[start : start + len(query)] == query:
            rows.extend(start + 1 + k for k in range(len(query)))
    if not rows:
        raise ValueError(
            f"word {word!r} (tokens {query}) is not a token sequence of the prompt "
            f"(tokens {tokens})"
        )
    return rows

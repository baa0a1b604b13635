"""Prompt tokens, word spans and DAAM's token-merge rules (no Beam, no NLP library)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

END_OF_WORD = "</w>"
WORD_START = "\u2581"  # sentencepiece's word-start marker (T5)
CLIP_SCHEME = "clip"  # byte-level BPE, words end at ``</w>``, lower-cased (CLIP)
SENTENCEPIECE_SCHEME = "sentencepiece"  # words start at ``▁``, case kept (T5)
BYTE_LEVEL_SPACE = "\u0120"  # ``Ġ``: byte-level BPE's space before a word (GPT-2, Qwen)
BYTE_LEVEL_SCHEME = "byte-level"  # words start at ``Ġ``, case kept (Qwen: Z-Image)
_WORD_START_MARKERS = {SENTENCEPIECE_SCHEME: WORD_START, BYTE_LEVEL_SCHEME: BYTE_LEVEL_SPACE}
# byte-level BPE's characters of the whitespace bytes (space, newline, tab, carriage return): a word starts there
BYTE_WHITESPACE = "\u0120\u010a\u0109\u010d"
_WORD_STARTS = {SENTENCEPIECE_SCHEME: WORD_START, BYTE_LEVEL_SCHEME: BYTE_WHITESPACE}
# CLIP's pre-tokeniser (``'s|'t|…|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+``): how a text splits into words
_WORD_UNITS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)
Span = tuple[int, int]
Item = TypeVar("Item")
# words not worth a map of their own: skipped by overlays, the preview's grid and default concepts
FUNCTION_WORDS = frozenset(
    ["a", "an", "the", "of", "on", "in", "at", "to", "with", "and", "or", "for", "from", "by", "into", "onto",
     "over", "under", "next", "near", "its", "his", "her", "their", "is", "are", "was", "were", "be", "this",
     "that", "these", "those", "some", "two", "three", "very"]
)


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
    scheme: str = CLIP_SCHEME

    def spans(self, tokenizer: Any, query: str) -> list[Span]:
        """Token spans of ``query`` (a word or phrase): DAAM's token rule for CLIP prompts, the
        word rule (``word_spans``) for sentencepiece and byte-level prompts, whose tokens depend on case."""
        if self.scheme != CLIP_SCHEME:
            return word_spans([{"word": w.word, "start": w.start, "end": w.end} for w in self.words], query, self.tokens)
        return token_spans(tokenizer, self.tokens, query)


def _clean(token: str) -> str:
    return token[: -len(END_OF_WORD)] if token.endswith(END_OF_WORD) else token


def max_prompt_tokens(tokenizer: Any) -> int:
    """Prompt tokens that fit in the text encoder window (77 - start - end = 75 for CLIP)."""
    return int(tokenizer.model_max_length) - 2


def word_scheme(tokenizer: Any) -> str:
    """How ``tokenizer`` marks words: ``▁`` word starts (sentencepiece/T5), ``Ġ`` word starts
    (byte-level BPE/Qwen) or ``</w>`` word ends (CLIP)."""
    pieces = tokenizer.tokenize("a and a")
    if any(t.endswith(END_OF_WORD) for t in pieces):
        return CLIP_SCHEME
    for scheme, marker in _WORD_START_MARKERS.items():
        if any(t.startswith(marker) for t in pieces):
            return scheme
    return CLIP_SCHEME


def is_sentencepiece(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` marks word starts with ``▁`` (sentencepiece/T5) rather than word ends."""
    return word_scheme(tokenizer) == SENTENCEPIECE_SCHEME


def _is_punctuation(piece: str, scheme: str = SENTENCEPIECE_SCHEME) -> bool:
    text = piece.lstrip(_WORD_STARTS[scheme])
    if scheme == BYTE_LEVEL_SCHEME:  # byte characters of non-ASCII text are parts of words
        return bool(text) and not any(c.isalnum() or not c.isascii() for c in text)
    return bool(text) and not any(c.isalnum() for c in text)


def _word_ends(tokens: Sequence[str], scheme: str) -> list[int]:
    """Exclusive ends of the words of ``tokens``: CLIP words end at ``</w>``; sentencepiece and
    byte-level words start at ``▁``/``Ġ`` and punctuation pieces stand apart (CLIP's convention, so
    the word rule and the class matcher see the same words for all)."""
    n = len(tokens)
    if scheme == CLIP_SCHEME:
        return [i + 1 for i, t in enumerate(tokens) if t.endswith(END_OF_WORD) or i == n - 1]
    starts = _WORD_STARTS[scheme]
    ends = []
    for i in range(1, n + 1):
        if (i == n or tokens[i][:1] in starts or _is_punctuation(tokens[i], scheme)
                or _is_punctuation(tokens[i - 1], scheme)):
            # a bare ``▁`` / ``Ġ`` (a space before some characters) joins the word after it
            if not (i < n and len(tokens[i - 1]) == 1 and tokens[i - 1] in starts):
                ends.append(i)
    return ends


def tokenize_prompt(tokenizer: Any, prompt: str, max_tokens: int | None = None) -> TokenizedPrompt:
    """Tokenise ``prompt`` like DAAM and split it into words with their token spans.

    CLIP: the prompt is lower-cased (as DAAM does) and a word ends at a token carrying the
    end-of-word marker, so ``"Cat,"`` gives the words ``cat`` and ``,``. Sentencepiece (T5): the
    prompt is tokenised as the pipeline encodes it (case kept), a word starts at ``▁`` and
    punctuation pieces are words of their own; ``tokens`` are the pieces without ``▁``,
    lower-cased. Byte-level BPE (Qwen) likewise, words starting at ``Ġ``; its ``tokens`` are the
    decoded tokens, lower-cased. Tokens past the window (``max_tokens``, default
    ``max_prompt_tokens``) are dropped and ``truncated`` is set.
    """
    scheme = word_scheme(tokenizer)
    raw = tokenizer.tokenize(prompt.lower() if scheme == CLIP_SCHEME else prompt)
    return prompt_of_tokens(tokenizer, prompt, raw, max_tokens, scheme)


def prompt_of_tokens(
    tokenizer: Any, prompt: str, raw: Sequence[str], limit: int | None = None, scheme: str | None = None
) -> TokenizedPrompt:
    """The ``TokenizedPrompt`` of ``prompt`` from its tokens ``raw`` as the encoder sees them (the
    first ``limit`` kept; Qwen-Image, Z-Image: cut from their templated text), split into words by
    ``scheme``'s rule (default: the tokenizer's, ``word_scheme``; see ``tokenize_prompt``)."""
    scheme = scheme or word_scheme(tokenizer)
    limit = max_prompt_tokens(tokenizer) if limit is None else limit
    kept = list(raw[:limit])
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(kept)]
    words: list[WordSpan] = []
    start = 0
    for end in _word_ends(kept, scheme):
        text = tokenizer.decode(ids[start:end]).strip()
        words.append(WordSpan(word=text, start=start, end=end))
        start = end
    display = [tokenizer.decode([i]).strip() for i in ids]
    if scheme == CLIP_SCHEME:
        tokens = [_clean(t) for t in kept]
    elif scheme == BYTE_LEVEL_SCHEME:
        tokens = [t.lower() for t in display]
    else:
        tokens = [t.lstrip(WORD_START).lower() for t in kept]
    return TokenizedPrompt(
        prompt=prompt,
        tokens=tokens,
        display_tokens=display,
        token_ids=ids,
        words=words,
        truncated=len(raw) > limit,
        num_tokens_total=len(raw),
        scheme=scheme,
    )


def split_words(text: str) -> list[str]:
    """``text`` lower-cased and split into words as CLIP's pre-tokeniser does (punctuation apart)."""
    return [unit.lower() for unit in _WORD_UNITS.findall(text)]


def occurrences(
    items: Sequence[Item],
    query: Sequence[str],
    same: Callable[[Item, str], bool] = operator.eq,
) -> list[Span]:
    """Spans ``[start, end)`` of every contiguous run of ``items`` matching ``query`` item by item.

    Runs may overlap; an empty ``query`` matches nowhere.
    """
    n = len(query)
    if not n:
        return []
    return [
        (start, start + n)
        for start in range(len(items) - n + 1)
        if all(same(items[start + k], q) for k, q in enumerate(query))
    ]


def token_spans(tokenizer: Any, tokens: Sequence[str], query: str) -> list[Span]:
    """Token spans ``[start, end)`` of every occurrence of ``query`` in a prompt's ``tokens``.

    DAAM's rule: ``query`` (a word or a phrase) is lower-cased and tokenised like the prompt, and
    ``</w>`` is stripped from both sides (``tokens`` may be raw BPE tokens or ``TokenizedPrompt``
    tokens). Raises ``ValueError`` if the query is not a token sequence of the prompt (``dog`` in
    "a hotdog": ``hotdog`` is one token).
    """
    wanted = [_clean(t) for t in tokenizer.tokenize(query.lower())]
    if not wanted:
        raise ValueError(f"word {query!r} has no tokens")
    prompt = [_clean(t) for t in tokens]
    spans = occurrences(prompt, wanted)
    if not spans:
        raise ValueError(
            f"word {query!r} (tokens {wanted}) is not a token sequence of the prompt "
            f"(tokens {prompt})"
        )
    return spans


def token_merge_indices(tokenizer: Any, tokens: list[str], word: str) -> list[int]:
    """Global-map rows of every occurrence of ``word``'s token sequence in ``tokens``.

    The spans of ``token_spans``, each token position + 1 for the start-token row.
    """
    return [i + 1 for start, end in token_spans(tokenizer, tokens, word) for i in range(start, end)]


def word_spellings(
    words: Sequence[Mapping[str, Any]], tokens: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """How each of a row's ``words`` entries may be spelled: its lower-cased text and its joined
    ``tokens`` (the text again without tokens)."""
    texts = [str(w["word"]).strip().lower() for w in words]
    if not tokens:
        return [(text, text) for text in texts]
    joined = ["".join(tokens[int(w["start"]) : int(w["end"])]).lower() for w in words]
    return list(zip(texts, joined))


def word_runs(spellings: Sequence[tuple[str, str]], units: Sequence[str]) -> list[Span]:
    """Word-index spans ``[start, end)`` of every run of consecutive words (``word_spellings``)
    spelling ``units`` (lower-cased ``split_words`` units), one unit a word: the row word rule."""
    return occurrences(spellings, units, operator.contains)


def word_spans(
    words: Sequence[Mapping[str, Any]], query: str, tokens: Sequence[str] | None = None
) -> list[Span]:
    """Token spans of ``query`` among a row's ``words`` entries (``{"word", "start", "end"}``).

    Without a tokenizer the query is split into words like the prompt (``split_words``) and
    matches every run of consecutive entries whose text, or whose joined ``tokens``, equals its
    words. Raises ``ValueError`` when nothing matches.
    """
    units = split_words(query)
    if not units:
        raise ValueError(f"word {query!r} has no words")
    matches = word_runs(word_spellings(words, tokens), units)
    if not matches:
        raise ValueError(
            f"word {query!r} is not in the prompt's words {[w['word'] for w in words]} "
            "(words are split like CLIP does: punctuation apart)"
        )
    return [(int(words[a]["start"]), int(words[b - 1]["end"])) for a, b in matches]


def row_spans(row: Mapping[str, Any], query: str, tokenizer: Any = None) -> list[Span]:
    """Token spans of ``query`` in a dataset row: the one matcher for rows.

    With a CLIP ``tokenizer``, DAAM's ``token_spans`` on the row's ``token_ids``; without one (or
    with a sentencepiece or byte-level one, whose pieces depend on case), ``word_spans`` on its
    ``words`` (and ``tokens``). Both raise ``ValueError`` when nothing matches.
    """
    if tokenizer is not None and word_scheme(tokenizer) == CLIP_SCHEME:
        ids = [int(i) for i in row["token_ids"]]
        return token_spans(tokenizer, tokenizer.convert_ids_to_tokens(ids), query)
    return word_spans(row["words"], query, row.get("tokens"))

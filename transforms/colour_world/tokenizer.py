"""The colour-world word-level tokenizer: one token per word, built with ``tokenizers`` (WordLevel).

It is a ``transformers`` fast tokenizer, so the project's prompt code (``tokenize``,
``convert_tokens_to_ids``, ``convert_ids_to_tokens``, ``decode``, ``model_max_length``) and
``save_pretrained``/``from_pretrained`` work on it as on CLIP's. Tokens carry CLIP's end-of-word
marker (``red</w>``), so DAAM's word rule (a word ends at a ``</w>`` token) gives one word per
token. ``model_max_length`` is 9: the null slot, the 7 words and one (always masked) end slot,
so ``words.max_prompt_tokens`` is 7. A word outside the vocabulary raises ``ValueError`` naming
it, from ``tokenize`` and from ``word_ids``.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from .scenes import PROMPT_WORDS, VOCABULARY

END_OF_WORD = "</w>"
UNKNOWN = "<unk>"
MODEL_MAX_LENGTH = PROMPT_WORDS + 2


def build_word_tokenizer(words: tuple[str, ...] = VOCABULARY) -> Tokenizer:
    """The ``tokenizers`` object: lower-case, words split on white space, ``word</w>`` ids in the
    order of ``words`` (``<unk>`` last), decoded back to space-separated words."""
    vocab = {w + END_OF_WORD: i for i, w in enumerate(words)}
    vocab[UNKNOWN] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token=UNKNOWN))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Strip(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Replace(Regex(r"(?=\s|$)"), END_OF_WORD),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.BPEDecoder(suffix=END_OF_WORD)
    return tok


class ColourWorldTokenizer(PreTrainedTokenizerFast):
    """``PreTrainedTokenizerFast`` over ``build_word_tokenizer``, refusing unknown words."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "tokenizer_object" not in kwargs and "tokenizer_file" not in kwargs:
            kwargs["tokenizer_object"] = build_word_tokenizer()
        kwargs.setdefault("unk_token", UNKNOWN)
        kwargs.setdefault("model_max_length", MODEL_MAX_LENGTH)
        super().__init__(*args, **kwargs)

    def _check_known(self, text: str) -> None:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        for token, (start, end) in zip(encoding.tokens, encoding.offsets):
            if token == UNKNOWN:
                known = [t[: -len(END_OF_WORD)] for t in sorted(self.get_vocab(), key=self.get_vocab().get)
                         if t.endswith(END_OF_WORD)]
                raise ValueError(f"unknown word {text[start:end]!r}: colour-world knows only {known}")

    def tokenize(self, text: str, *args: Any, **kwargs: Any) -> list[str]:
        self._check_known(text)
        return super().tokenize(text, *args, **kwargs)

    def word_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (one per word); ``ValueError`` on a word outside the vocabulary."""
        self._check_known(text)
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

"""A Qwen-style byte-level BPE tokenizer with a chat template, built offline (tiny Z-Image).

Real Qwen3 text encoders tokenise with Qwen's byte-level BPE (``Qwen2Tokenizer``: GPT-2 bytes,
``Ġ`` marks a space before a word, case kept) and the pipelines wrap each prompt in the model's
chat template, which cannot be downloaded here. This builds a real ``Qwen2Tokenizer`` whose merges
are *trained* deterministically (``tokenizers``' BPE trainer, no randomness) on a fixed corpus: the
whole words of the vendored CLIP BPE list, more often the more frequent (CLIP's merges are learnt in
frequency order), lower-case and capitalised, after a space, a paragraph break and at a text's start. Qwen's special tokens ``<|endoftext|>``,
``<|im_start|>``, ``<|im_end|>`` and its added ``<think>``/``</think>`` are added tokens, and the
``chat_template`` renders one user message as Qwen3's does:
``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`` (``enable_thinking=False``
appends the empty ``<think>\\n\\n</think>\\n\\n`` block, as Qwen3's template does).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_THINK = ("<think>", "</think>")
_WORDS = 6000
_VOCAB = 12000
# one user message (and optional system/assistant turns) as Qwen3's template renders them
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def _corpus() -> list[str]:
    """The training texts: CLIP's ASCII whole words in rank order, each repeated by its rank."""
    from .tiny_sd import clip_vocab_and_merges

    _, merges = clip_vocab_and_merges()
    words: list[str] = []
    for first, second in merges:
        token = first + second
        if token.endswith("</w>") and token[:-4].isascii() and token[:-4].isalpha():
            words.append(token[:-4])
            if len(words) >= _WORDS:
                break
    # a text's first word has no space before it: word pieces (``hot`` ``dog``) are learnt too; a
    # paragraph break before the capitalised form: ``ĊĊ`` is one token, as in Qwen's vocabulary
    return [" ".join([word] * max(2, _WORDS // (2 * rank + 2))) + " " + word.capitalize() + "\n\n" + word.capitalize()
            for rank, word in enumerate(words)]


@lru_cache(maxsize=1)
def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level BPE vocabulary and merges (deterministic: same corpus, same trainer)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        special_tokens=[QWEN_SPECIALS[0]],
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def build_qwen_tokenizer(model_max_length: int = 512) -> Any:
    """A ``transformers.Qwen2Tokenizer`` over ``qwen_vocab_and_merges`` with Qwen's special tokens
    and ``QWEN3_CHAT_TEMPLATE`` (pads with ``<|endoftext|>``, as Qwen3 does)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = qwen_vocab_and_merges()
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS[1:]], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_THINK])
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer

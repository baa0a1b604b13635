"""A Qwen-style byte-level BPE tokenizer with Qwen3's chat template, built offline, and a tiny Qwen3.

Real Flux.2 [klein] pipelines encode prompts with Qwen3 through a ``Qwen2TokenizerFast`` and its
chat template, neither of which can be downloaded here. The tiny model gets a real
``Qwen2Tokenizer`` (byte-level BPE, ``Ġ`` marks a leading space, case kept, Qwen's pre-tokeniser
regex) whose merges are *built*, not trained: for the most frequent whole words of the vendored
CLIP BPE vocabulary (in CLIP's merge order), the chains of merges that spell ``Ġword`` (first) and
``word`` one byte at a time. Deterministic, no corpus; other words split into several tokens.
Qwen's special tokens (``<|endoftext|>`` the pad, ``<|im_start|>``, ``<|im_end|>``, ``<think>``,
``</think>``) come last, and the Jinja ``chat_template`` renders what Qwen3's renders for a
conversation of plain-text turns: ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` per turn, then with
``add_generation_prompt`` ``<|im_start|>assistant\\n`` and, with ``enable_thinking=False``, the
empty thinking block ``<think>\\n\\n</think>\\n\\n``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from transforms.attribution.words import END_OF_WORD

BYTE_SPACE = "\u0120"  # ``Ġ``: byte-level BPE's space
_BYTE_NEWLINE = "\u010a"  # ``Ċ``
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
_WORDS = 3000
_CAPITALISED = 1000
_TEMPLATE_WORDS = ("user", "assistant", "system")
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


@lru_cache(maxsize=1)
def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level vocabulary (the 256 byte characters, then every merged token) and its merges
    in rank order: double spaces and newlines, then the prefix chains of ``Ġword`` (and ``ĠWord``
    for the first ones), then of ``word``, for the template's role names and CLIP's first words."""
    from .tiny_sd import _bytes_to_unicode, clip_vocab_and_merges

    _, clip_merges = clip_vocab_and_merges()
    words = list(_TEMPLATE_WORDS)  # one token each, as in Qwen's vocabulary
    for merge in clip_merges:
        token = "".join(merge)
        word = token[: -len(END_OF_WORD)]
        if token.endswith(END_OF_WORD) and word.isascii() and word.isalpha() and word not in _TEMPLATE_WORDS:
            words.append(word)
            if len(words) >= _WORDS:
                break
    tokens = list(_bytes_to_unicode().values())
    known = set(tokens)
    # Qwen's runs of spaces and newlines (``ĠĠ``, ``ĊĊ``: its template's ``\n\n`` is one token)
    merges: list[tuple[str, str]] = [(BYTE_SPACE, BYTE_SPACE), (_BYTE_NEWLINE, _BYTE_NEWLINE)]
    tokens += ["".join(m) for m in merges]
    known.update(tokens)
    # word-start chains first: a ``Ġword`` is merged left to right before any inner merge applies
    spelled_words = [BYTE_SPACE + w for w in words] + [BYTE_SPACE + w.capitalize() for w in words[:_CAPITALISED]]
    for spelled in spelled_words + words:
        for end in range(2, len(spelled) + 1):
            if spelled[:end] not in known:
                merges.append((spelled[: end - 1], spelled[end - 1]))
                tokens.append(spelled[:end])
                known.add(spelled[:end])
    return {token: i for i, token in enumerate(tokens)}, merges


def byte_level_bpe() -> Any:
    """The ``tokenizers.Tokenizer`` of ``qwen_vocab_and_merges`` as Qwen's tokenizer builds it
    (Qwen's pre-tokeniser regex, byte-level, NFC), no special tokens."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_qwen_tokenizer().backend_tokenizer.to_str())


@lru_cache(maxsize=1)
def _qwen_tokenizer() -> Any:
    from transformers import Qwen2TokenizerFast

    vocab, merges = qwen_vocab_and_merges()
    return Qwen2TokenizerFast(vocab=vocab, merges=merges, unk_token=None)


def build_qwen_tokenizer(model_max_length: int = 512) -> Any:
    """A ``Qwen2Tokenizer`` over ``qwen_vocab_and_merges`` with Qwen's specials and chat template."""
    from transformers import Qwen2TokenizerFast

    vocab, merges = qwen_vocab_and_merges()
    vocab = {**vocab, **{s: len(vocab) + i for i, s in enumerate(QWEN_SPECIALS)}}
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab, merges=merges, model_max_length=model_max_length,
        unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIALS[1:3]),
    )
    tokenizer.add_tokens(list(QWEN_SPECIALS[3:]))
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def qwen3_encoder(vocab_size: int, hidden_size: int, num_layers: int, seed: int) -> Any:
    """A seeded small ``Qwen3ForCausalLM`` (2 heads of 8, one key/value head, tied embeddings)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=1_000_000.0,
    )
    return Qwen3ForCausalLM(config)

"""The built-in ``tiny-qwenimage``: a Qwen-Image-shaped ``QwenImagePipeline`` with random weights.

Built deterministically offline (fixed seeds) and cached as an ordinary diffusers folder, like
``tiny``. Shapes as diffusers' own Qwen-Image test (``get_dummy_components``): a
``QwenImageTransformer2DModel`` of 2 double-stream blocks, 3 heads of 16 (rotary axes 8+4+4),
16 = 4 latent channels x 2x2 packing; a ``Qwen2_5_VLForConditionalGeneration`` with a 2-layer text
model of hidden size 16 and a 2-block vision tower (unused for text-to-image); an
``AutoencoderKLQwenImage`` with ``z_dim`` 4, ``base_dim`` 24 (factor 4); flow-matching Euler.

The tokenizer is a real ``Qwen2Tokenizer`` (byte-level BPE, Qwen's pre-tokeniser, its special
tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, …) whose merges are *built*, not
trained (``qwen_vocab_and_merges``): every word of the pipeline's system template and the most
frequent words of the vendored CLIP vocabulary become one token each, the rest splits into
bytes and word pieces. So the template's system part is 34 tokens, as with Qwen's own tokenizer,
and the pipeline's fixed drop of 34 tokens leaves the keys starting at the user prompt.
The QK-norm gains are raised so that the random attention is peaked and per-token maps differ.
Default size: ``QwenImagePipeline``'s ``default_sample_size`` (128) x ``vae_scale_factor`` (4) = 512 px.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .tiny_flux import flux_scheduler
from .tiny_sd import _bytes_to_unicode, cached_model, clip_vocab_and_merges

TINY_QWENIMAGE_FOLDER = "tiny-qwenimage-v1"
# Qwen2.5-VL's special tokens (the chat template's and the vision placeholders), ids after the BPE tokens
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")
_CLIP_WORDS = 3000  # frequent CLIP words made single tokens (with and without a leading space)
_SEED = 20260301
_QK_GAIN = 2.0
_TEXT_DIM = 16
# QwenImagePipeline's system template (``prompt_template_encode``): its words become whole tokens
_TEMPLATE = ("system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
             "relationships of the objects and background:\nuser\nassistant\n")
_PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
                          re.IGNORECASE)


def _bpe(word: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-level BPE of one pre-token (its byte characters) under merge ``ranks``."""
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        first, second = parts[i], parts[i + 1]
        merged, j = [], 0
        while j < len(parts):
            if j + 1 < len(parts) and parts[j] == first and parts[j + 1] == second:
                merged.append(first + second)
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


@lru_cache(maxsize=1)
def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte alphabet, then merges built so that each listed pre-token is one token: for each in
    turn, the pair of its first two BPE parts is appended as a merge until it is whole (an appended
    merge ranks last, so tokens already whole stay whole)."""
    byte_char = _bytes_to_unicode()
    words = [w for w in _PRETOKENIZE.findall(_TEMPLATE)]
    _, clip_merges = clip_vocab_and_merges()
    clip_words = [a + b for a, b in clip_merges if b.endswith("</w>") and (a + b)[:-4].isalpha()][:_CLIP_WORDS]
    for word in clip_words:
        words += [" " + word[:-4], word[:-4]]
    vocab = {char: i for i, char in enumerate(byte_char.values())}
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        symbols = tuple(byte_char[b] for b in word.encode("utf-8"))
        parts = _bpe(symbols, ranks)
        while len(parts) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = _bpe(symbols, ranks)
    return vocab, list(ranks)


def build_qwen_tokenizer() -> Any:
    """A ``transformers.Qwen2Tokenizer`` over ``qwen_vocab_and_merges`` with Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    vocab, merges = qwen_vocab_and_merges()
    vocab = {**vocab, **{token: len(vocab) + i for i, token in enumerate(QWEN_SPECIALS)}}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768,
                               extra_special_tokens=list(QWEN_SPECIALS[1:]))
    return tokenizer


def qwen_text_encoder(tokenizer: Any, seed: int, hidden: int = _TEXT_DIM, **text: Any) -> Any:
    """A seeded ``Qwen2_5_VLForConditionalGeneration``: by default text 2 layers of hidden 16 (2
    heads of 8; ``text``: other text-config values, e.g. a benchmark's real width), vision depth 2."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden, "intermediate_size": _TEXT_DIM, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0, "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"), **text,
        },
        vision_config={"depth": 2, "hidden_size": _TEXT_DIM, "intermediate_size": _TEXT_DIM, "num_heads": 2,
                       "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=len(tokenizer), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_qwenimage_components(num_layers: int = 2, heads: int = 3) -> dict[str, Any]:
    """The tiny pipeline's components; the arguments give folders of other shapes (tests)."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    torch.manual_seed(_SEED)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers, attention_head_dim=16,
        num_attention_heads=heads, joint_attention_dim=_TEXT_DIM, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
                parameter.mul_(_QK_GAIN)
    torch.manual_seed(_SEED + 1)
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    tokenizer = build_qwen_tokenizer()
    return {
        "transformer": transformer,
        "vae": vae.eval(),
        "text_encoder": qwen_text_encoder(tokenizer, _SEED + 2),
        "tokenizer": tokenizer,
        "scheduler": flux_scheduler(),
    }


def build_tiny_qwenimage_pipeline(**variant: Any) -> Any:
    """Build the tiny ``QwenImagePipeline`` in memory (deterministic weights)."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline(**build_qwenimage_components(**variant))


def tiny_qwenimage_path(cache_dir: Path | None = None) -> Path:
    """The cached ``tiny-qwenimage`` folder, built first if needed (safe under concurrency)."""
    return cached_model(TINY_QWENIMAGE_FOLDER, build_tiny_qwenimage_pipeline, cache_dir)

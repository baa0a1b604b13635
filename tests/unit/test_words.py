"""Tokens, word spans and DAAM's word-merge rules with the real CLIP tokenizer."""

from __future__ import annotations

import pytest
import torch

from transforms.attribution import GlobalHeatMap, token_merge_indices, tokenize_prompt, word_mask
from transforms.tiny_model import build_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


def test_clip_vocabulary_is_the_real_one(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_words_split_punctuation_and_keep_multi_token_words(tokenizer):
    t = tokenize_prompt(tokenizer, "A Cat, an armadillo!")
    assert t.tokens == ["a", "cat", ",", "an", "armad", "illo", "!"]
    assert [(w.word, w.start, w.end) for w in t.words] == [
        ("a", 0, 1), ("cat", 1, 2), (",", 2, 3), ("an", 3, 4), ("armadillo", 4, 6), ("!", 6, 7),
    ]
    assert not t.truncated and t.token_ids[1] == tokenizer.convert_tokens_to_ids("cat</w>")


def test_non_ascii_tokens_are_readable(tokenizer):
    t = tokenize_prompt(tokenizer, "ünï 🐱 كلب")
    assert "🐱" in t.display_tokens
    assert [w.word for w in t.words] == ["ünï", "🐱", "كلب"]


def test_merge_indices_follow_daam(tokenizer):
    tokens = tokenize_prompt(tokenizer, "a dog and a dog with a red ball").tokens
    assert token_merge_indices(tokenizer, tokens, "dog") == [2, 5]
    assert token_merge_indices(tokenizer, tokens, "red ball") == [8, 9]
    assert token_merge_indices(tokenizer, tokens, "Dog") == [2, 5]
    with pytest.raises(ValueError, match="not a token sequence"):
        token_merge_indices(tokenizer, tokenize_prompt(tokenizer, "a hotdog on a plate").tokens, "dog")


def test_word_map_is_mean_of_all_occurrences(tokenizer):
    t = tokenize_prompt(tokenizer, "a dog and a dog")
    maps = torch.rand(len(t.tokens) + 2, 4, 4)
    heat = GlobalHeatMap(tokenizer, t, maps)
    torch.testing.assert_close(heat.word_map("dog"), (maps[2] + maps[5]) / 2)
    normalized = heat.normalized().maps
    torch.testing.assert_close(normalized, maps / (maps[1:-1].sum(0, keepdim=True) + 1e-6))


def test_mask_thresholds_min_max_normalised_map():
    ramp = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    mask = word_mask(ramp, (4, 4), threshold=0.4)
    assert mask.dtype == torch.bool
    assert mask.sum() == (ramp / 15 > 0.4).sum()

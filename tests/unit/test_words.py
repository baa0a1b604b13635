"""Tokens, word spans and DAAM's word-merge rules with the real CLIP tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transforms.attribution import (
    GlobalHeatMap,
    row_spans,
    token_merge_indices,
    token_spans,
    tokenize_prompt,
    word_mask,
)
from transforms.attribution.heatmap import min_max, word_heat
from transforms.attribution.overlay import find_spans, heat_and_mask, word_overlay
from transforms.attribution.pseudo_masks import class_scores, word_rows
from transforms.attribution.words import split_words, word_spans
from transforms.models.tiny_sd import build_clip_tokenizer


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


# -- the one matcher -------------------------------------------------------------------------------
def spans_of(tokenizer, prompt, query):
    return token_spans(tokenizer, tokenize_prompt(tokenizer, prompt).tokens, query)


def test_matcher_multi_token_word(tokenizer):
    assert spans_of(tokenizer, "an armadillo on a rock", "armadillo") == [(1, 3)]
    assert spans_of(tokenizer, "an armadillo on a rock", "ARMADILLO") == [(1, 3)]


def test_matcher_keeps_every_occurrence_of_a_repeated_word(tokenizer):
    t = tokenize_prompt(tokenizer, "a dog and a dog")
    assert token_spans(tokenizer, t.tokens, "dog") == [(1, 2), (4, 5)]
    assert token_merge_indices(tokenizer, t.tokens, "dog") == [2, 5]  # the same spans, +1 start row


def test_matcher_punctuation_is_its_own_token(tokenizer):
    assert spans_of(tokenizer, "a cat, a dog", "cat,") == [(1, 3)]
    assert spans_of(tokenizer, "a cat, a dog", ",") == [(2, 3)]
    assert spans_of(tokenizer, "a cat, a dog", "cat") == [(1, 2)]


def test_matcher_multi_word_phrase(tokenizer):
    assert spans_of(tokenizer, "a cat on a red sofa", "red sofa") == [(4, 6)]
    assert spans_of(tokenizer, "a cat on a red sofa", "Red  Sofa") == [(4, 6)]


def test_matcher_raises_when_absent_as_token_sequence(tokenizer):
    with pytest.raises(ValueError, match=r"'dog' \(tokens \['dog'\]\) is not a token sequence"):
        spans_of(tokenizer, "a hotdog on a plate", "dog")
    with pytest.raises(ValueError, match="has no tokens"):
        spans_of(tokenizer, "a cat", "  ")


def test_matcher_accepts_raw_bpe_tokens(tokenizer):
    prompt = "A Cat, an armadillo and a cat"
    raw = tokenizer.tokenize(prompt.lower())
    assert any(t.endswith("</w>") for t in raw)
    for query in ("cat", "armadillo", "cat,", "a cat"):
        assert token_spans(tokenizer, raw, query) == spans_of(tokenizer, prompt, query)


def test_split_words_is_clip_pre_tokenisation():
    assert split_words("A Red-Sofa, isn't it 42") == ["a", "red", "-", "sofa", ",", "isn", "'t", "it", "4", "2"]


# -- row paths agree with the matcher --------------------------------------------------------------
def make_row(tokenizer, prompt, size=(24, 16)):
    t = tokenize_prompt(tokenizer, prompt)
    maps = np.random.default_rng(0).random((len(t.tokens), 4, 4)).astype(np.float16)
    return {
        "image": Image.new("RGB", size),
        "tokens": t.display_tokens,
        "token_ids": t.token_ids,
        "token_maps": maps,
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in t.words],
    }, t


QUERIES = [
    ("a dog and a dog with a red ball", "dog"),
    ("a dog and a dog with a red ball", "red ball"),
    ("an armadillo, a Cat", "armadillo"),
    ("an armadillo, a Cat", "armadillo,"),
    ("an armadillo, a Cat", "CAT"),
    ("ünï 🐱 كلب", "🐱"),
]


@pytest.mark.parametrize("prompt,query", QUERIES)
def test_row_paths_give_the_matchers_spans(tokenizer, prompt, query):
    row, t = make_row(tokenizer, prompt)
    expected = token_spans(tokenizer, t.tokens, query)
    assert row_spans(row, query, tokenizer) == expected
    assert row_spans(row, query) == expected  # word rule without a tokenizer
    assert find_spans(row, query) == find_spans(row, query, tokenizer=tokenizer) == expected
    assert word_overlay(row, query).spans == expected
    assert word_rows(row["words"], query) == [i for a, b in expected for i in range(a, b)]


def test_row_paths_raise_or_skip_when_absent(tokenizer):
    row, _ = make_row(tokenizer, "a hotdog on a plate")
    with pytest.raises(ValueError, match="not in the prompt's words"):
        find_spans(row, "dog")
    with pytest.raises(ValueError, match="not a token sequence"):
        find_spans(row, "dog", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="has no words"):
        word_spans(row["words"], "  ")
    assert word_rows(row["words"], "dog") == []
    assert class_scores(row["token_maps"], row["words"], ["dog"], (16, 24)) == {}


# -- one normalisation and one mask rule -----------------------------------------------------------
def test_overlay_and_pseudo_masks_share_heatmap_rules(tokenizer):
    row, t = make_row(tokenizer, "a dog and a dog with a red ball")
    token_maps = torch.from_numpy(row["token_maps"].astype(np.float32))
    heat_map = GlobalHeatMap(tokenizer, t, torch.nn.functional.pad(token_maps, (0, 0, 0, 0, 1, 1)))  # + start/end rows
    latent = heat_map.word_map("red ball")
    heat, mask = heat_and_mask(latent.numpy(), (16, 24), 0.4)
    np.testing.assert_array_equal(heat, word_heat(latent, (16, 24)).numpy())
    np.testing.assert_array_equal(mask, heat_map.word_mask("red ball", (16, 24)).numpy())
    scores = class_scores(row["token_maps"], row["words"], ["red ball"], (16, 24))
    np.testing.assert_array_equal(scores["red ball"], word_heat(latent, (16, 24)).numpy())
    ramp = torch.arange(5, dtype=torch.float32)
    torch.testing.assert_close(min_max(ramp), (ramp - 0) / (4 + 1e-8), rtol=0, atol=0)

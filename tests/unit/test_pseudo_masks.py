"""Class pseudo-masks from stored token maps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from transforms.attribution.overlay import find_spans
from transforms.attribution.pseudo_masks import IGNORE, pseudo_mask, word_rows

WORDS = [
    {"word": "a", "start": 0, "end": 1},
    {"word": "red", "start": 1, "end": 2},
    {"word": "armadillo", "start": 2, "end": 4},
    {"word": "and", "start": 4, "end": 5},
    {"word": "a", "start": 5, "end": 6},
    {"word": "cat", "start": 6, "end": 7},
]


def test_word_rows_cover_multi_token_and_multi_word_classes():
    assert word_rows(WORDS, "armadillo") == [2, 3]
    assert word_rows(WORDS, "Red Armadillo") == [1, 2, 3]
    assert word_rows(WORDS, "a") == [0, 5]
    assert word_rows(WORDS, "dog") == []


def test_word_rows_use_the_row_matcher():
    row = {"words": WORDS}
    for query in ("armadillo", "Red Armadillo", "a", "and a cat"):
        assert word_rows(WORDS, query) == [i for a, b in find_spans(row, query) for i in range(a, b)]
    assert word_rows(WORDS, "armadillo and") == [2, 3, 4]
    assert word_rows(WORDS, "arma") == []  # a word, not a prefix


def test_pseudo_mask_assigns_classes_background_and_ignore():
    maps = np.zeros((7, 8, 8), dtype=np.float16)
    maps[2:4, :, :4] = 1.0  # armadillo on the left half
    maps[6, :, 4:] = 1.0  # cat on the right half
    row = {"image": Image.new("RGB", (32, 32)), "token_maps": maps, "words": WORDS}
    mask = pseudo_mask(row, ["dog", "armadillo", "cat"])
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    assert (mask[:, :12] == 2).all() and (mask[:, 20:] == 3).all()
    assert set(np.unique(mask)) <= {0, 2, 3, IGNORE}
    empty = pseudo_mask(row, ["dog"])
    assert (empty == 0).all()

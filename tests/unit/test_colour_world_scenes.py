"""colour-world scenes: the prompt set and split, renderer determinism, and truth from pixels."""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms.colour_world import scenes
from transforms.colour_world.scenes import (
    ALL_PROMPTS,
    HELD_OUT_PROMPTS,
    TRAIN_PROMPTS,
    colour_masks,
    parse_prompt,
    pixel_labels,
    render,
)


def test_prompt_set_and_held_out_split() -> None:
    assert len(ALL_PROMPTS) == 72 and len(set(ALL_PROMPTS)) == 72
    assert len(HELD_OUT_PROMPTS) == 12 and len(TRAIN_PROMPTS) == 60
    assert not set(HELD_OUT_PROMPTS) & set(TRAIN_PROMPTS)
    # every colour-shape pair still appears in training
    pairs = {(p.colour1, p.shape1) for p in TRAIN_PROMPTS} | {(p.colour2, p.shape2) for p in TRAIN_PROMPTS}
    assert len(pairs) == len(scenes.COLOUR_NAMES) * len(scenes.SHAPES)
    # the fixed rule: random.Random(0) shuffling the prompt indices, the first 12 held out
    order = list(range(72))
    random.Random(0).shuffle(order)
    assert HELD_OUT_PROMPTS == tuple(ALL_PROMPTS[i] for i in sorted(order[:12]))
    assert all(len(p.text.split()) == 7 for p in ALL_PROMPTS)


def test_render_is_deterministic() -> None:
    prompt = ALL_PROMPTS[5]
    a = [render(prompt, random.Random(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[0][1], a[1][1])
    other = render(prompt, random.Random(8))
    assert not np.array_equal(a[0][0], other[0])


@pytest.mark.parametrize("index", range(0, 72, 7))
def test_masks_from_pixels_are_the_rendered_objects(index: int) -> None:
    prompt = ALL_PROMPTS[index]
    image, masks = render(prompt, random.Random(index))
    assert image.shape == (32, 32, 3) and image.dtype == np.float32 and masks.shape == (2, 32, 32)
    assert not (masks[0] & masks[1]).any()
    assert masks[0].sum() > 25 and masks[1].sum() > 25
    np.testing.assert_array_equal(colour_masks(image, prompt.colours), masks)
    labels = pixel_labels(image)
    assert set(np.unique(labels)) == {0, 1 + scenes.COLOUR_NAMES.index(prompt.colour1),
                                      1 + scenes.COLOUR_NAMES.index(prompt.colour2)}


def test_pixel_labels_nearest_colour_and_other() -> None:
    image = np.zeros((1, 4, 3), dtype=np.float32)
    image[0, 1] = (0.9, 0.2, 0.1)  # near red
    image[0, 2] = (0.5, 0.5, 0.5)  # far from every palette colour
    image[0, 3] = (0.8, 0.9, 0.1)  # near yellow
    assert pixel_labels(image).tolist() == [[0, 1, -1, 4]]


def test_parse_prompt() -> None:
    p = parse_prompt("A red circle and a  blue square")
    assert p.text == "a red circle and a blue square"
    with pytest.raises(ValueError, match="unknown word 'cat'"):
        parse_prompt("a red cat and a blue square")
    with pytest.raises(ValueError, match="not of the form"):
        parse_prompt("a red circle")
    with pytest.raises(ValueError, match="differ"):
        parse_prompt("a red circle and a red square")

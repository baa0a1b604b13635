"""colour-world segmentation data: pixel-truth labels equal the renderer's masks, pseudo labels are
colours labels, sets are deterministic, and the label mIoU counts as documented."""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms.attribution.classes import load_vocabulary
from transforms.colour_world import segmentation_data as cw
from transforms.colour_world.scenes import ALL_PROMPTS, COLOUR_NAMES, TRAIN_PROMPTS, render
from transforms.training import IGNORE_INDEX


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(untrained_colour_world):
    return untrained_colour_world


@pytest.fixture(scope="module")
def generated(pipe):
    return cw.generate_set(pipe, TRAIN_PROMPTS, count=5, seed=3, steps=2, batch=3)


def test_classes_are_the_colours_list_in_pixel_label_order():
    assert tuple(load_vocabulary("colours").names) == COLOUR_NAMES == ("red", "green", "blue", "yellow")
    assert cw.ID2LABEL == {0: "background", 1: "red", 2: "green", 3: "blue", 4: "yellow"}
    assert cw.colour_vocabulary().names == COLOUR_NAMES


@pytest.mark.parametrize("index", range(0, 72, 7))
def test_truth_labels_of_rendered_scenes_are_the_renderer_masks(index):
    prompt = ALL_PROMPTS[index]
    image, masks = render(prompt, random.Random(index))
    labels = cw.truth_labels(image)
    assert labels.dtype == np.uint8 and labels.shape == image.shape[:2]
    expected = np.zeros(labels.shape, np.uint8)
    for mask, colour in zip(masks, prompt.colours):
        expected[mask] = 1 + COLOUR_NAMES.index(colour)
    np.testing.assert_array_equal(labels, expected)


def test_other_pixels_are_ignored():
    image = np.zeros((4, 4, 3), np.float32)
    image[0, 0] = (0.5, 0.5, 0.5)  # far from every palette colour
    image[1, 1] = (0.9, 0.95, 0.1)  # near yellow
    labels = cw.truth_labels(image)
    assert labels[0, 0] == IGNORE_INDEX and labels[1, 1] == 4 and (labels[2:] == 0).all()


def test_generated_set_has_both_labellings(generated):
    assert len(generated) == 5 and generated.images.shape == (5, 32, 32, 3)
    assert generated.pseudo.shape == generated.truth.shape == (5, 32, 32)
    assert generated.pseudo.dtype == generated.truth.dtype == np.uint8
    allowed = {0, 1, 2, 3, 4, IGNORE_INDEX}
    assert set(np.unique(generated.pseudo).tolist()) <= allowed
    assert set(np.unique(generated.truth).tolist()) <= allowed
    # each pseudo label map names only the two colours of its prompt
    for text, pseudo in zip(generated.prompts, generated.pseudo):
        named = {1 + COLOUR_NAMES.index(w) for w in text.split() if w in COLOUR_NAMES}
        assert set(np.unique(pseudo).tolist()) <= {0, IGNORE_INDEX, *named}
    np.testing.assert_array_equal(generated.truth, np.stack([cw.truth_labels(im) for im in generated.images]))
    assert generated.prompts == [p.text for p in TRAIN_PROMPTS[:5]] and generated.seeds == [3, 4, 5, 6, 7]


def test_generation_is_deterministic(pipe, generated):
    again = cw.generate_set(pipe, TRAIN_PROMPTS, count=5, seed=3, steps=2, batch=3)
    np.testing.assert_array_equal(again.images, generated.images)
    np.testing.assert_array_equal(again.pseudo, generated.pseudo)
    # another batching: the same noise per image (CPU kernels may differ in the last bits)
    other = cw.generate_set(pipe, TRAIN_PROMPTS, count=5, seed=3, steps=2, batch=5)
    np.testing.assert_allclose(other.images, generated.images, atol=1e-4)


def test_rows_carry_images_and_labels(generated):
    rows = generated.dataset("truth")
    assert rows.column_names == ["id", "prompt", "image", "label"] and len(rows) == 5
    row = rows[0]
    assert row["image"].mode == "RGB" and row["label"].mode == "L" and row["image"].size == (32, 32)
    np.testing.assert_array_equal(np.array(row["label"]), generated.truth[0])
    np.testing.assert_array_equal(np.array(generated.dataset("pseudo")[0]["label"]), generated.pseudo[0])
    with pytest.raises(ValueError, match="'pseudo' or 'truth'"):
        generated.dataset("both")


def test_label_miou_both_ways():
    truth = np.array([[[0, 1], [2, 255]]])
    perfect = cw.label_miou(truth, truth)
    assert perfect["background_included"]["mean_iou"] == 1.0 and perfect["background_excluded"]["mean_iou"] == 1.0
    # a pseudo-mask's ignore band on a class pixel is a miss, on an ignored pixel nothing
    pseudo = np.array([[[0, 255], [2, 0]]])
    result = cw.label_miou(pseudo, truth)
    included = result["background_included"]["per_category_iou"]
    assert included[0] == 1.0 and included[1] == 0.0 and included[2] == 1.0
    assert result["background_excluded"]["mean_iou"] == pytest.approx(0.5)
    assert cw.labelled_fraction(truth) == 0.75

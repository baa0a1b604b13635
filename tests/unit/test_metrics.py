"""transforms.training.metrics: mean IoU with evaluate's semantics, on hand-computed examples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from transforms.training.metrics import MeanIoU, intersect_and_union, mean_iou, reduce_reference_labels

KEYS = {"mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"}


def test_two_classes_by_hand():
    # valid pixels (ref != 255): (p0, r0) hit, (p1, r1) hit, (p1, r0) miss
    result = mean_iou([np.array([[0, 1], [1, 1]])], [np.array([[0, 1], [0, 255]])], num_labels=2)
    assert set(result) == KEYS
    np.testing.assert_allclose(result["per_category_iou"], [1 / 2, 1 / 2])  # class 0: 1 / (1 + 2 - 1)
    np.testing.assert_allclose(result["per_category_accuracy"], [1 / 2, 1])
    assert result["mean_iou"] == pytest.approx(0.5)
    assert result["mean_accuracy"] == pytest.approx(0.75)
    assert result["overall_accuracy"] == pytest.approx(2 / 3)


def test_class_absent_from_both_is_nan_and_skipped():
    result = mean_iou([np.array([[0, 1]])], [np.array([[0, 1]])], num_labels=3)
    assert np.isnan(result["per_category_iou"][2]) and np.isnan(result["per_category_accuracy"][2])
    assert result["mean_iou"] == 1.0 and result["mean_accuracy"] == 1.0


def test_predicted_but_absent_class_scores_zero_iou_nan_accuracy():
    result = mean_iou([np.array([[0, 2]])], [np.array([[0, 1]])], num_labels=3)
    np.testing.assert_allclose(result["per_category_iou"], [1, 0, 0])
    assert np.isnan(result["per_category_accuracy"][2]) and result["per_category_accuracy"][1] == 0
    assert result["mean_iou"] == pytest.approx(1 / 3)
    assert result["mean_accuracy"] == pytest.approx(1 / 2)


def test_areas_add_over_images_of_different_sizes():
    # image 1: class 1 hit once; image 2: class 1 predicted on 3 background pixels
    predictions = [np.array([[1]]), np.array([[1, 1, 1, 0]])]
    references = [np.array([[1]]), np.array([[0, 0, 0, 0]])]
    intersect, union, predicted, labelled = intersect_and_union(predictions[1], references[1], 2)
    np.testing.assert_array_equal([intersect, union, predicted, labelled], [[1, 0], [4, 3], [1, 3], [4, 0]])
    result = mean_iou(predictions, references, num_labels=2)
    np.testing.assert_allclose(result["per_category_iou"], [1 / 4, 1 / 4])  # dataset-level, not per image
    assert result["overall_accuracy"] == pytest.approx(2 / 5)


def test_reduce_labels_drops_zero_and_shifts_references_only():
    np.testing.assert_array_equal(reduce_reference_labels(np.array([0, 1, 2, 255])), [255, 0, 1, 255])
    reference = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    result = mean_iou([np.array([[1, 0], [1, 0]])], [reference], num_labels=2, reduce_labels=True)
    np.testing.assert_allclose(result["per_category_iou"], [1, 1])
    assert reference[0, 0] == 0  # the input is not changed


def test_out_of_range_predictions_count_nowhere_and_custom_ignore_index():
    result = mean_iou([np.array([5, 1, 0])], [np.array([1, 1, 0])], num_labels=2)
    np.testing.assert_allclose(result["per_category_iou"], [1, 1 / 2])
    assert result["overall_accuracy"] == pytest.approx(2 / 3)
    ignored_zero = mean_iou([np.array([1, 1, 0])], [np.array([0, 1, 0])], num_labels=2, ignore_index=0)
    assert np.isnan(ignored_zero["per_category_iou"][0]) and ignored_zero["mean_iou"] == 1.0


def test_nothing_to_score_is_nan_without_warnings_and_nan_to_num():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = mean_iou([np.zeros((2, 2), int)], [np.full((2, 2), 255)], num_labels=2)
    assert np.isnan(result["mean_iou"]) and np.isnan(result["overall_accuracy"])
    filled = mean_iou([np.zeros((2, 2), int)], [np.full((2, 2), 255)], num_labels=2, nan_to_num=-1)
    assert filled["mean_iou"] == -1 and list(filled["per_category_iou"]) == [-1, -1]


def test_accumulator_and_tensors_match_the_function():
    rng = np.random.default_rng(0)
    predictions = [rng.integers(0, 4, (5, 7)) for _ in range(3)]
    references = [np.where(rng.random((5, 7)) < 0.1, 255, rng.integers(0, 4, (5, 7))) for _ in range(3)]
    expected = mean_iou(predictions, references, num_labels=4)
    metric = MeanIoU(4)
    metric.update(torch.as_tensor(np.stack(predictions[:2])), torch.as_tensor(np.stack(references[:2])))
    metric.update(predictions[2].tolist(), references[2].tolist())
    for key, value in metric.compute().items():
        np.testing.assert_allclose(value, expected[key])


def test_matches_evaluates_histogram_formulation():
    """evaluate counts areas with np.histogram(bins=num_labels, range=(0, num_labels - 1))."""
    rng = np.random.default_rng(1)
    prediction, reference = rng.integers(-1, 8, (40, 40)), rng.integers(0, 7, (40, 40))
    reference[rng.random((40, 40)) < 0.2] = 255
    keep = reference != 255

    def histogram(values: np.ndarray) -> np.ndarray:
        return np.histogram(values, bins=6, range=(0, 5))[0]

    p, r = prediction[keep], reference[keep]
    intersect, predicted, labelled = histogram(p[p == r]), histogram(p), histogram(r)
    ours = intersect_and_union(prediction, reference, num_labels=6)
    np.testing.assert_array_equal(ours, [intersect, predicted + labelled - intersect, predicted, labelled])


def test_mismatches_are_refused():
    with pytest.raises(ValueError, match="differs from reference shape"):
        mean_iou([np.zeros((2, 2), int)], [np.zeros((2, 3), int)], num_labels=2)
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        mean_iou([np.zeros(2, int)], [np.zeros(2, int)] * 2, num_labels=2)
    with pytest.raises(ValueError, match="num_labels must be >= 1"):
        MeanIoU(0)

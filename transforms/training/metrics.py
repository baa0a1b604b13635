"""Mean IoU with the semantics of Hugging Face ``evaluate``'s ``mean_iou`` (numpy only).

Areas are summed over every image first (a dataset-level IoU per class, not a mean of per-image
IoUs). Reference pixels equal to ``ignore_index`` are dropped with their predictions; values
outside ``0 … num_labels - 1`` count in no class. A class absent from both predictions and
references has IoU NaN (0 / 0) and is skipped by the means (``np.nanmean``); one predicted but
absent from the references has IoU 0 and accuracy NaN. ``reduce_labels`` (references only, as in
``evaluate``): 0 becomes 255 and every other label is lowered by one (255 stays 255), the
ADE20K convention where 0 is "unlabelled"::

    result = mean_iou(predictions, references, num_labels=3)        # background 0 is a class
    result["mean_iou"], result["per_category_iou"]                   # float, array of 3
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .joint_transforms import IGNORE_INDEX

__all__ = ["MeanIoU", "intersect_and_union", "mean_iou", "reduce_reference_labels"]


def _counts(values: np.ndarray, num_labels: int) -> np.ndarray:
    values = values[(values >= 0) & (values < num_labels)]
    return np.bincount(values, minlength=num_labels).astype(np.float64)


def reduce_reference_labels(reference: np.ndarray) -> np.ndarray:
    """``evaluate``'s ``reduce_labels``: 0 → 255, k → k - 1, 255 stays 255."""
    reduced = np.where(reference == 0, 255, reference) - 1
    reduced[reduced == 254] = 255
    return reduced


def intersect_and_union(
    prediction: Any,
    reference: Any,
    num_labels: int,
    ignore_index: int = IGNORE_INDEX,
    reduce_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class areas of one prediction/reference pair of integer label maps (same shape, any
    number of dimensions; numpy arrays, tensors or nested lists): intersection, union, predicted
    area and reference area, each float64 of length ``num_labels``."""
    prediction = np.asarray(prediction).astype(np.int64, copy=False)
    reference = np.asarray(reference).astype(np.int64, copy=False)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    if reduce_labels:
        reference = reduce_reference_labels(reference)
    keep = reference != ignore_index
    prediction, reference = prediction[keep], reference[keep]
    intersect = _counts(prediction[prediction == reference], num_labels)
    predicted, labelled = _counts(prediction, num_labels), _counts(reference, num_labels)
    return intersect, predicted + labelled - intersect, predicted, labelled


class MeanIoU:
    """``mean_iou`` accumulated batch by batch: ``update`` with each prediction/reference pair (or
    a stacked batch of pairs: the areas just add up), then ``compute``."""

    def __init__(self, num_labels: int, ignore_index: int = IGNORE_INDEX, reduce_labels: bool = False) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels, self.ignore_index, self.reduce_labels = num_labels, ignore_index, reduce_labels
        self.areas = np.zeros((4, num_labels), dtype=np.float64)  # intersect, union, predicted, labelled

    def update(self, predictions: Any, references: Any) -> None:
        """Add the areas of one pair of label maps of equal shape."""
        self.areas += np.stack(
            intersect_and_union(predictions, references, self.num_labels, self.ignore_index, self.reduce_labels)
        )

    def compute(self, nan_to_num: float | None = None) -> dict[str, Any]:
        """``mean_iou``, ``mean_accuracy``, ``overall_accuracy`` (numpy floats) and
        ``per_category_iou``, ``per_category_accuracy`` (arrays of ``num_labels``); NaNs replaced
        by ``nan_to_num`` when given."""
        intersect, union, _, labelled = self.areas
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of no class at all
            iou, accuracy = intersect / union, intersect / labelled
            result = {
                "mean_iou": np.nanmean(iou),
                "mean_accuracy": np.nanmean(accuracy),
                "overall_accuracy": intersect.sum() / labelled.sum(),
                "per_category_iou": iou,
                "per_category_accuracy": accuracy,
            }
        if nan_to_num is not None:
            result = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in result.items()}
        return result


def mean_iou(
    predictions: Iterable[Any],
    references: Iterable[Any],
    num_labels: int,
    ignore_index: int = IGNORE_INDEX,
    reduce_labels: bool = False,
    nan_to_num: float | None = None,
) -> dict[str, Any]:
    """``evaluate.load("mean_iou").compute(...)``: the metrics of ``MeanIoU.compute`` over pairs of
    label maps (each pair one shape; pairs may differ in size)."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    metric = MeanIoU(num_labels, ignore_index, reduce_labels)
    for prediction, reference in zip(predictions, references):
        metric.update(prediction, reference)
    return metric.compute(nan_to_num)

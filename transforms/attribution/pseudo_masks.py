"""Class pseudo-masks from a dataset row's token maps (weakly supervised segmentation).

The recipe of Dataset Diffusion (Nguyen et al., NeurIPS 2023) without its self-attention refinement:
each class named in the prompt gets the mean map of its tokens, resized to the image and min-max
normalised (``heatmap.word_heat``, the score DAAM's masks threshold); a pixel takes the class with
the highest score if that score clears the threshold, is background well below it, and is marked
``IGNORE`` (255) in an uncertain band around it. Classes are found with ``words.word_spans``.

The label rule is ``class_maps.label_rule`` (the one the pipeline's ``--classes`` label maps use),
with the band ``[threshold - ignore_band, threshold + ignore_band)`` ignored and scores from
``threshold + ignore_band`` up labelled. Before it shared that rule the band was
``(threshold - ignore_band, threshold + ignore_band]``: only pixels scoring exactly on a band edge
changed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from schemas.maps import row_maps

from .class_maps import BACKGROUND, IGNORE, label_rule
from .config import DEFAULT_THRESHOLD
from .heatmap import word_heat
from .words import word_spans

__all__ = ["BACKGROUND", "IGNORE", "class_scores", "pseudo_mask", "word_rows"]


def word_rows(words: Sequence[dict[str, Any]], phrase: str) -> list[int]:
    """Token rows of every occurrence of ``phrase`` (one or more words) among a row's ``words``
    (the row matcher ``words.word_spans``); ``[]`` if it does not occur."""
    try:
        spans = word_spans(words, phrase)
    except ValueError:
        return []
    return [i for start, end in spans for i in range(start, end)]


def class_scores(token_maps: np.ndarray, words: Sequence[dict[str, Any]], classes: Sequence[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Min-max normalised map at image ``size`` for each class that occurs in the prompt."""
    maps = torch.as_tensor(np.asarray(token_maps, dtype=np.float32))
    scores = {}
    for name in classes:
        rows = word_rows(words, name)
        if not rows:
            continue
        scores[name] = word_heat(maps[rows].mean(0), size).numpy()
    return scores


def pseudo_mask(
    row: dict[str, Any],
    classes: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    ignore_band: float = 0.1,
) -> np.ndarray:
    """A ``uint8`` label map for a loaded dataset row: 0 background, ``i + 1`` for ``classes[i]``,
    255 where the winning score lies in ``[threshold - ignore_band, threshold + ignore_band)``."""
    width, height = row["image"].size
    scores = class_scores(row_maps(row), row["words"], classes, (height, width))
    if not scores:
        return np.full((height, width), BACKGROUND, dtype=np.uint8)
    labels = [list(classes).index(name) + 1 for name in scores]
    return label_rule(np.stack(list(scores.values())), labels, threshold + ignore_band, threshold - ignore_band)

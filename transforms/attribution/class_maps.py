"""Class maps, label maps and their quality statistics for one traced image (``--classes``).

The result of segmentation for one image is a ``SampleSegmentation``: the classes its prompt names
(``classes.match_classes`` on the prompt as generated), one map per class at map resolution, the
label map at image size (0 background, 1..K classes, 255 ignored) and per-class statistics that
users filter on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classes import ClassMatch

BACKGROUND = 0
IGNORE = 255


@dataclass(frozen=True)
class ClassQuality:
    """Cheap per-class statistics of one label map (what pseudo-label filters use).

    Attributes:
        label: the class label (1..K).
        peak: maximum of the class's raw (unrefined, not normalised) cross-attention map.
        area: fraction of the image's pixels labelled with this class.
        ignore_fraction: fraction of the image's pixels in the ignore band won by this class.
        agreement: IoU between the class's pixels without refinement and with it; ``None``
            when refinement is off.
    """

    label: int
    peak: float
    area: float
    ignore_fraction: float
    agreement: float | None


@dataclass
class SampleSegmentation:
    """Segmentation of one image.

    Attributes:
        prompt: the prompt as generated (with the class names appended under
            ``append_class_prompt``); ``matches`` index its tokens.
        matches: every class occurrence in the prompt, in prompt order.
        labels: the distinct class labels in order of first occurrence; row ``k`` of
            ``class_maps`` and ``quality[k]`` belong to ``labels[k]``.
        class_maps: ``(len(labels), h, w)`` float32 at map resolution: the (refined) class map
            before min-max, the input of the label rule.
        label_map: ``(H, W)`` uint8 at image size.
        quality: one ``ClassQuality`` per label.
    """

    prompt: str
    matches: list[ClassMatch]
    labels: list[int]
    class_maps: np.ndarray
    label_map: np.ndarray
    quality: list[ClassQuality] = field(default_factory=list)

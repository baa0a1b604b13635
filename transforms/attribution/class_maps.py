"""Class maps, label maps and their quality statistics for one traced image (``--classes``).

The result of segmentation for one image is a ``SampleSegmentation``: the classes its prompt names
(``classes.match_classes`` on the prompt as generated), one map per class at map resolution, the
label map at image size (0 background, 1..K classes, 255 ignored) and per-class statistics that
users filter on.

The recipe is Dataset Diffusion's (Nguyen et al., NeurIPS 2023, and its released code): a class map
is the mean of its tokens' cross-attention maps; ``refine`` multiplies it, at the self-attention's
grid, by the self-attention affinity raised to a power; ``label_rule`` takes per pixel the class of
highest min-max score, keeps it at or above a threshold and ignores (255) a band below. The scores
are DAAM's word-mask scores (``heatmap.word_heat``: bicubic to image size, then min-max).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .classes import ClassMatch, class_token_rows
from .heatmap import min_max, word_heat

BACKGROUND = 0
IGNORE = 255
FLAT_CONTRAST = 1e-3  # relative spread below which a class map carries no spatial information


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


# -- class maps ---------------------------------------------------------------------------------
def class_maps(token_maps: torch.Tensor, matches: Sequence[ClassMatch]) -> tuple[list[int], torch.Tensor]:
    """The labels a prompt names (first occurrence order) and their class maps ``(K, h, w)``.

    A class map is the mean of ``token_maps`` (``GlobalHeatMap.token_maps``, ``(n, h, w)``) over
    the token rows of all the class's matches (``classes.class_token_rows``), as DAAM merges the
    occurrences of a word. No match: ``([], (0, h, w))``.
    """
    rows = class_token_rows(matches)
    if not rows:
        return [], token_maps.new_zeros((0, *token_maps.shape[-2:]))
    return list(rows), torch.stack([token_maps[r].mean(0) for r in rows.values()])


def per_class_min_max(maps: torch.Tensor) -> torch.Tensor:
    """``heatmap.min_max`` of each map of a ``(K, h, w)`` stack on its own."""
    return torch.stack([min_max(m) for m in maps]) if len(maps) else maps


def refine(maps: torch.Tensor, affinity: torch.Tensor, grid: tuple[int, int], power: int) -> torch.Tensor:
    """Dataset Diffusion's self-attention refinement ``A^power · M`` of class maps ``(K, h, w)``.

    Each map is area-downsampled to the affinity's ``grid`` (``Q = gh·gw`` row-major), min-max
    normalised on its own, multiplied ``power`` times by the row-stochastic ``affinity`` ``(Q, Q)``
    (``A @ (A @ … M)``: ``A^power`` is never formed) and resized bilinearly back to ``(h, w)``.
    Values stay in ``[0, 1]``; runs on the tensors' device.
    """
    if not len(maps):
        return maps.float()
    size = tuple(maps.shape[-2:])
    down = F.interpolate(maps[None].float(), size=grid, mode="area")[0]
    vectors = per_class_min_max(down).reshape(len(maps), -1).T  # (Q, K)
    if affinity.shape != (vectors.shape[0],) * 2:
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit a {grid[0]}x{grid[1]} grid")
    affinity = affinity.to(vectors)
    for _ in range(power):
        vectors = affinity @ vectors
    refined = vectors.T.reshape(len(maps), *grid)
    return F.interpolate(refined[None], size=size, mode="bilinear", align_corners=False)[0]


# -- label maps ---------------------------------------------------------------------------------
def is_flat(class_map: torch.Tensor, contrast: float = FLAT_CONTRAST) -> bool:
    """Whether a map's spread ``max - min`` is below ``contrast`` times its largest magnitude (or
    is zero): min-max would only stretch float rounding noise into a mask."""
    top = float(class_map.abs().max()) if class_map.numel() else 0.0
    return top == 0.0 or float(class_map.max() - class_map.min()) <= contrast * top


def class_heat(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``heatmap.word_heat`` of each class map: bicubic to ``size`` (H, W), min-max, ``(K, H, W)``.

    A flat map (``is_flat``: e.g. a class map refined by a nearly uniform self-attention) scores 0
    everywhere, so it labels no pixel instead of a pattern of rounding noise that would change
    with the batch a prompt was generated in.
    """
    if not len(maps):
        return maps.new_zeros((0, *size), dtype=torch.float32)
    return torch.stack([
        maps.new_zeros(size, dtype=torch.float32) if is_flat(m) else word_heat(m, size) for m in maps
    ])


def label_rule(
    scores: torch.Tensor | np.ndarray, labels: Sequence[int], threshold: float, ignore_low: float
) -> np.ndarray:
    """Labels from per-class scores ``(K, H, W)`` in ``[0, 1]``: where the best class scores
    ``>= threshold`` its label, in ``[ignore_low, threshold)`` ``IGNORE`` (255), else ``BACKGROUND``.

    Dataset Diffusion's rule (foreground 0.6, ignore band [0.5, 0.6)). ``uint8 (H, W)``.
    """
    best, winner = _best(torch.as_tensor(scores))
    return _apply_rule(best, winner, labels, threshold, ignore_low).cpu().numpy()


def label_map(
    maps: torch.Tensor, labels: Sequence[int], size: tuple[int, int], threshold: float, ignore_low: float
) -> np.ndarray:
    """The label map of class maps ``(K, h, w)``: ``label_rule`` on their ``class_heat`` at ``size``."""
    return label_rule(class_heat(maps, size), labels, threshold, ignore_low)


def _best(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: the best score and the index of its class (zeros without classes)."""
    if not len(scores):
        zeros = scores.new_zeros(scores.shape[1:])
        return zeros, zeros.long()
    return scores.max(0)


def _apply_rule(
    best: torch.Tensor, winner: torch.Tensor, labels: Sequence[int], threshold: float, ignore_low: float
) -> torch.Tensor:
    """``label_rule`` on the best score and winner index per pixel: ``uint8`` tensor."""
    out = torch.full(best.shape, BACKGROUND, dtype=torch.uint8, device=best.device)
    if not len(labels):
        return out
    table = torch.as_tensor(list(labels), dtype=torch.uint8, device=best.device)
    fore = best >= threshold
    out[fore] = table[winner[fore]]
    out[(best >= ignore_low) & ~fore] = IGNORE
    return out


# -- one image ----------------------------------------------------------------------------------
def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def class_quality(
    raw: torch.Tensor,
    refined: torch.Tensor | None,
    labels: Sequence[int],
    size: tuple[int, int],
    threshold: float,
    ignore_low: float,
) -> tuple[np.ndarray, list[ClassQuality]]:
    """The label map of ``refined`` (or of ``raw`` when ``None``) and one ``ClassQuality`` per label.

    ``peak`` is the maximum of the raw class map; ``area`` the fraction of pixels with the label;
    ``ignore_fraction`` the fraction of pixels in the ignore band whose best class it is;
    ``agreement`` the IoU of the label's pixels under the same rule from ``raw`` and from
    ``refined`` (``None`` without refinement; 1.0 when both are empty).
    """
    used = raw if refined is None else refined
    best, winner = _best(class_heat(used, size))
    labelled = _apply_rule(best, winner, labels, threshold, ignore_low)
    unrefined = None
    if refined is not None:
        unrefined = _apply_rule(*_best(class_heat(raw, size)), labels, threshold, ignore_low)
    pixels = labelled.numel()
    ignored = labelled == IGNORE
    quality = []
    for k, label in enumerate(labels):
        mine = labelled == label
        quality.append(
            ClassQuality(
                label=int(label),
                peak=float(raw[k].max()),
                area=int(mine.sum()) / pixels,
                ignore_fraction=int((ignored & (winner == k)).sum()) / pixels,
                agreement=None if unrefined is None else _iou(unrefined == label, mine),
            )
        )
    return labelled.cpu().numpy(), quality


def segment_sample(
    prompt: str,
    matches: Sequence[ClassMatch],
    token_maps: torch.Tensor,
    size: tuple[int, int],
    threshold: float,
    ignore_low: float,
    affinity: torch.Tensor | None = None,
    grid: tuple[int, int] | None = None,
    power: int = 1,
    given: torch.Tensor | None = None,
) -> SampleSegmentation:
    """The ``SampleSegmentation`` of one image from its ``token_maps`` ``(n, h, w)`` and the
    ``matches`` of its prompt as generated (or from ``given`` class maps ``(K, h, w)`` in the
    labels' order, e.g. ConceptAttention's); refined with ``affinity`` ``(Q, Q)`` on ``grid``
    when given. Work happens on the maps' device; only the results come to the host."""
    labels, raw = class_maps(token_maps.float(), matches)
    if given is not None:
        if len(given) != len(labels):
            raise ValueError(f"{len(given)} class maps given for {len(labels)} classes")
        raw = given.float().to(token_maps.device)
    refined = None
    if affinity is not None:
        if grid is None:
            raise ValueError("refinement needs the affinity's grid")
        refined = refine(raw, affinity, grid, power)
    labelled, quality = class_quality(raw, refined, labels, size, threshold, ignore_low)
    kept = raw if refined is None else refined
    return SampleSegmentation(
        prompt=prompt,
        matches=list(matches),
        labels=labels,
        class_maps=kept.detach().cpu().numpy().astype(np.float32),
        label_map=labelled,
        quality=quality,
    )

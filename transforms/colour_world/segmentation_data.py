"""Colour-world segmentation data: the same generated images with DAAM pseudo-masks and with the
true masks read from their pixels, for measuring the weak-supervision loop (issue 14, item 4).

    from transforms.colour_world.segmentation_data import ID2LABEL, generate_set, label_miou
    from transforms.colour_world.scenes import TRAIN_PROMPTS

    data = generate_set(pipe, TRAIN_PROMPTS, count=720, seed=0)     # any ColourWorldPipeline
    pseudo_rows = data.dataset("pseudo")     # datasets.Dataset: id, prompt, image, label (PIL L)
    truth_rows = data.dataset("truth")       # the same images, labels from the pixels
    label_miou(data.pseudo, data.truth)      # pseudo-masks scored against the truth, both ways

Classes are the four colours in the order of the shipped ``colours`` class list (= ``scenes.
COLOUR_NAMES``): 0 background, 1 red, 2 green, 3 blue, 4 yellow, 255 ignore.

* Pseudo labels: ``SampleSegmentation.label_map`` of ``generate_traced(pipe, prompts, seeds,
  GenerationConfig(steps=20, guidance_scale=1.0), segmentation=SegmentationConfig(
  load_vocabulary("colours"), refine=False))`` (colour-world has no self-attention to refine with).
* True labels (``truth_labels``): each pixel's nearest palette colour (``scenes.pixel_labels``,
  the truth ``evaluate`` uses), "other" pixels (no palette colour near) 255.

Image ``i`` of a set shows ``prompts[i % len(prompts)]`` generated with seed ``seed + i``, one
image per seed, so a set is a deterministic function of (model, prompts, count, seed). Imports
torch, numpy, ``datasets`` and the attribution core only (no Beam, nothing of ``pipeline``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import numpy as np
from PIL import Image

from ..attribution.classes import ClassVocabulary, load_vocabulary
from ..attribution.config import GenerationConfig, SegmentationConfig
from ..attribution.generate import TracedSample, generate_traced
from ..training.joint_transforms import IGNORE_INDEX
from ..training.metrics import mean_iou
from .scenes import COLOUR_NAMES, OTHER, ScenePrompt, pixel_labels

CLASS_LIST = "colours"
ID2LABEL: dict[int, str] = {0: "background", **{1 + i: name for i, name in enumerate(COLOUR_NAMES)}}
NUM_LABELS = len(ID2LABEL)
STEPS = 20
GUIDANCE_SCALE = 1.0
BATCH = 32
LabelKind = Literal["pseudo", "truth"]

__all__ = [
    "ID2LABEL",
    "NUM_LABELS",
    "ColourWorldSet",
    "colour_vocabulary",
    "generate_set",
    "label_miou",
    "labelled_fraction",
    "pseudo_labels",
    "schedule",
    "segmentation_rows",
    "truth_labels",
]


def colour_vocabulary() -> ClassVocabulary:
    """The shipped ``colours`` class list, checked to name the colours in ``COLOUR_NAMES`` order
    (so class ``k`` of a pseudo label is ``pixel_labels``' label ``k``)."""
    vocabulary = load_vocabulary(CLASS_LIST)
    if tuple(vocabulary.names) != COLOUR_NAMES:
        raise ValueError(f"the {CLASS_LIST!r} class list names {vocabulary.names}, expected {COLOUR_NAMES}")
    return vocabulary


def truth_labels(image: np.ndarray) -> np.ndarray:
    """Class labels ``(H, W)`` uint8 of an ``(H, W, 3)`` image in [0, 1] from its pixels: 0
    background, ``1 + COLOUR_NAMES.index(colour)`` for a pixel nearest that colour, 255 for "other"."""
    labels = pixel_labels(image)
    labels[labels == OTHER] = IGNORE_INDEX
    return labels.astype(np.uint8)


def pseudo_labels(sample: TracedSample) -> np.ndarray:
    """The DAAM label map ``(H, W)`` uint8 of a sample traced with a ``colours`` segmentation."""
    if sample.segmentation is None:
        raise ValueError("sample has no segmentation: trace it with segmentation=SegmentationConfig(...)")
    labels = np.asarray(sample.segmentation.label_map, dtype=np.uint8)
    bad = set(np.unique(labels).tolist()) - {*range(NUM_LABELS), IGNORE_INDEX}
    if bad:
        raise ValueError(f"label map holds {sorted(bad)}: not a colours label (0..{NUM_LABELS - 1}, {IGNORE_INDEX})")
    return labels


def schedule(prompts: Sequence[ScenePrompt], count: int, seed: int) -> list[tuple[ScenePrompt, int]]:
    """(prompt, seed) of each of ``count`` images: the prompts in turn, seeds ``seed + i``."""
    if count < 1 or not prompts:
        raise ValueError(f"need count >= 1 and at least one prompt, got {count} and {len(prompts)}")
    return [(prompts[i % len(prompts)], seed + i) for i in range(count)]


@dataclass
class ColourWorldSet:
    """Generated images with both labellings: ``images`` ``(N, H, W, 3)`` float32 in [0, 1],
    ``pseudo`` and ``truth`` ``(N, H, W)`` uint8, and each image's prompt text and seed."""

    prompts: list[str]
    seeds: list[int]
    images: np.ndarray
    pseudo: np.ndarray
    truth: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)

    def labels(self, kind: LabelKind) -> np.ndarray:
        if kind not in ("pseudo", "truth"):
            raise ValueError(f"labels are 'pseudo' or 'truth', got {kind!r}")
        return self.pseudo if kind == "pseudo" else self.truth

    def dataset(self, kind: LabelKind) -> datasets.Dataset:
        """The images with ``kind`` labels as ``segmentation`` rows (see ``segmentation_rows``)."""
        ids = [f"colour-world-{seed}" for seed in self.seeds]
        return segmentation_rows(self.images, self.labels(kind), ids, self.prompts)


def segmentation_rows(
    images: np.ndarray, labels: np.ndarray, ids: Sequence[str], prompts: Sequence[str]
) -> datasets.Dataset:
    """A ``datasets.Dataset`` shaped like a ``segmentation`` config (``id``, ``prompt``, ``image``
    RGB, ``label`` mode ``L``): images 8-bit as the pipeline writes them (diffusers' rounding)."""
    features = datasets.Features(
        {"id": datasets.Value("string"), "prompt": datasets.Value("string"), "image": datasets.Image(), "label": datasets.Image()}
    )
    columns = {
        "id": list(ids),
        "prompt": list(prompts),
        "image": [Image.fromarray((np.asarray(im) * 255).round().astype(np.uint8)) for im in images],
        "label": [Image.fromarray(np.asarray(lab, dtype=np.uint8), mode="L") for lab in labels],
    }
    return datasets.Dataset.from_dict(columns, features=features)


def generate_set(
    pipe: Any,
    prompts: Sequence[ScenePrompt],
    count: int,
    seed: int,
    steps: int = STEPS,
    batch: int = BATCH,
    recipe: dict[str, Any] | None = None,
) -> ColourWorldSet:
    """``count`` images of ``prompts`` (see ``schedule``) from a colour-world pipeline, traced with
    the ``colours`` classes, with their pseudo and true labels. ``recipe``: ``SegmentationConfig``
    fields of the label rule (``refine``, ``refine_factor``, ``power``, ``threshold``,
    ``ignore_low``, ``label_maps``); default: no refinement, the config's thresholds."""
    config = GenerationConfig(steps=steps, guidance_scale=GUIDANCE_SCALE)
    segmentation = SegmentationConfig(colour_vocabulary(), **{"refine": False, **(recipe or {})})
    plan = schedule(prompts, count, seed)
    images, pseudo, truth = [], [], []
    for start in range(0, len(plan), batch):
        chunk = plan[start : start + batch]
        samples = generate_traced(pipe, [p.text for p, _ in chunk], [s for _, s in chunk], config, segmentation=segmentation)
        for sample in samples:
            images.append(np.asarray(sample.image, dtype=np.float32))
            pseudo.append(pseudo_labels(sample))
            truth.append(truth_labels(sample.image))
    return ColourWorldSet([p.text for p, _ in plan], [s for _, s in plan], np.stack(images), np.stack(pseudo), np.stack(truth))


def label_miou(predictions: np.ndarray, references: np.ndarray, num_labels: int = NUM_LABELS) -> dict[str, dict[str, Any]]:
    """``mean_iou`` of label maps against reference labels, background included (classes 0..K,
    255 references ignored) and excluded (``reduce_labels``: classes 1..K, background references
    not scored). A prediction of 255 (a pseudo-mask's ignore band) is no class: where the
    reference has a class it counts as a miss."""
    predictions = np.asarray(predictions, dtype=np.int64)
    references = np.asarray(references, dtype=np.int64)
    return {
        "background_included": mean_iou(predictions, references, num_labels),
        # in reduced labels background is -1 (no class) and 255 becomes 254 (no class)
        "background_excluded": mean_iou(predictions - 1, references, num_labels - 1, reduce_labels=True),
    }


def labelled_fraction(labels: np.ndarray) -> float:
    """The fraction of pixels not ``IGNORE_INDEX``."""
    return float((np.asarray(labels) != IGNORE_INDEX).mean())

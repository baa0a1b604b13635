"""The colour world: prompts, the held-out split, a deterministic scene renderer, truth from pixels.

A scene is 32x32 RGB on black with exactly two non-overlapping objects that differ in colour
(pure red, green, blue, yellow) and in shape (circle, square, triangle with its apex up). Its
prompt is always the seven words "a C1 S1 and a C2 S2". Of the 72 prompts, 12 are held out of
training by a fixed rule (``random.Random(0)`` shuffling the prompt indices; the first 12 of the
permutation), so every colour-shape pair still appears in training.

The truth of any image, generated or rendered, comes from its pixels: each pixel takes the
nearest palette colour (black or one of the four) and is "other" when that colour is farther
than ``OTHER_DISTANCE2`` (squared RGB distance, RGB in [0, 1]).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np

RESOLUTION = 32
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle")
FUNCTION_WORDS = ("a", "and")
VOCABULARY = FUNCTION_WORDS + COLOUR_NAMES + SHAPES
PROMPT_WORDS = 7
# word positions of the prompt "a C1 S1 and a C2 S2"
COLOUR_POSITIONS = (1, 5)
SHAPE_POSITIONS = (2, 6)
OTHER = -1
BACKGROUND = 0
OTHER_DISTANCE2 = 0.25
HELD_OUT_SEED = 0
NUM_HELD_OUT = 12
PALETTE = np.array([(0.0, 0.0, 0.0)] + [COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class ScenePrompt:
    """The four content words of "a C1 S1 and a C2 S2"."""

    colour1: str
    shape1: str
    colour2: str
    shape2: str

    @property
    def text(self) -> str:
        return f"a {self.colour1} {self.shape1} and a {self.colour2} {self.shape2}"

    @property
    def colours(self) -> tuple[str, str]:
        return self.colour1, self.colour2

    @property
    def shapes(self) -> tuple[str, str]:
        return self.shape1, self.shape2


ALL_PROMPTS: tuple[ScenePrompt, ...] = tuple(
    ScenePrompt(c1, s1, c2, s2)
    for c1, c2 in itertools.permutations(COLOUR_NAMES, 2)
    for s1, s2 in itertools.permutations(SHAPES, 2)
)


def _split() -> tuple[tuple[ScenePrompt, ...], tuple[ScenePrompt, ...]]:
    order = list(range(len(ALL_PROMPTS)))
    random.Random(HELD_OUT_SEED).shuffle(order)
    held = sorted(order[:NUM_HELD_OUT])
    train = sorted(order[NUM_HELD_OUT:])
    return tuple(ALL_PROMPTS[i] for i in held), tuple(ALL_PROMPTS[i] for i in train)


HELD_OUT_PROMPTS, TRAIN_PROMPTS = _split()


def parse_prompt(text: str) -> ScenePrompt:
    """The ``ScenePrompt`` of a text in the grammar "a C1 S1 and a C2 S2" (case and spacing free).

    Raises ``ValueError`` naming the first word outside the vocabulary, or saying how the text
    breaks the grammar.
    """
    words = text.lower().split()
    for word in words:
        if word not in VOCABULARY:
            raise ValueError(f"unknown word {word!r}: colour-world knows only {list(VOCABULARY)}")
    if (
        len(words) != PROMPT_WORDS
        or words[0] != "a"
        or words[3] != "and"
        or words[4] != "a"
        or any(words[i] not in COLOUR_NAMES for i in COLOUR_POSITIONS)
        or any(words[i] not in SHAPES for i in SHAPE_POSITIONS)
    ):
        raise ValueError(f"prompt {text!r} is not of the form 'a <colour> <shape> and a <colour> <shape>'")
    prompt = ScenePrompt(words[1], words[2], words[5], words[6])
    if prompt.colour1 == prompt.colour2 or prompt.shape1 == prompt.shape2:
        raise ValueError(f"prompt {text!r}: the two objects must differ in colour and in shape")
    return prompt


_CENTRES = np.arange(RESOLUTION, dtype=np.float32) + 0.5
_YY, _XX = np.meshgrid(_CENTRES, _CENTRES, indexing="ij")


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean ``(32, 32)`` mask of a shape of radius ``r`` centred at (cx, cy) in pixels."""
    if shape == "circle":
        return (_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r
    if shape == "square":
        s = 0.89 * r
        return (np.abs(_XX - cx) <= s) & (np.abs(_YY - cy) <= s)
    if shape == "triangle":
        h = 1.15 * r
        return (_YY >= cy - h) & (_YY <= cy + h) & (np.abs(_XX - cx) <= (_YY - (cy - h)) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def render(prompt: ScenePrompt, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """A scene of ``prompt`` drawn with ``rng``: image ``(32, 32, 3)`` float32 in [0, 1] and the
    objects' exact masks ``(2, 32, 32)`` bool (object 1, object 2; disjoint).

    Radii are uniform in [4.5, 7] px, centres uniform in [8, 24] px, redrawn until the centres
    are more than ``1.25 * (r1 + r2) + 1`` apart. The same rng state gives the same scene.
    """
    margin = 8
    while True:
        r1, r2 = rng.uniform(4.5, 7), rng.uniform(4.5, 7)
        c1 = (rng.uniform(margin, RESOLUTION - margin), rng.uniform(margin, RESOLUTION - margin))
        c2 = (rng.uniform(margin, RESOLUTION - margin), rng.uniform(margin, RESOLUTION - margin))
        if math.dist(c1, c2) > (r1 + r2) * 1.25 + 1:
            break
    m1 = shape_mask(prompt.shape1, c1[0], c1[1], r1)
    m2 = shape_mask(prompt.shape2, c2[0], c2[1], r2) & ~m1
    image = np.zeros((RESOLUTION, RESOLUTION, 3), dtype=np.float32)
    image[m1] = COLOURS[prompt.colour1]
    image[m2] = COLOURS[prompt.colour2]
    return image, np.stack([m1, m2])


def pixel_labels(image: np.ndarray) -> np.ndarray:
    """Per-pixel label of an ``(H, W, 3)`` image in [0, 1]: ``BACKGROUND`` (0), 1 + the index of
    the nearest colour in ``COLOUR_NAMES``, or ``OTHER`` (-1) when the nearest palette colour is
    farther than ``OTHER_DISTANCE2``."""
    d2 = ((np.asarray(image, dtype=np.float32)[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1)
    labels = d2.argmin(-1).astype(np.int64)
    labels[d2.min(-1) > OTHER_DISTANCE2] = OTHER
    return labels


def colour_masks(image: np.ndarray, colours: tuple[str, ...]) -> np.ndarray:
    """True masks ``(len(colours), H, W)`` bool: the pixels whose label is each named colour."""
    labels = pixel_labels(image)
    return np.stack([labels == 1 + COLOUR_NAMES.index(c) for c in colours])


def sample_scenes(
    prompts: tuple[ScenePrompt, ...], count: int, rng: random.Random
) -> tuple[list[ScenePrompt], np.ndarray, np.ndarray]:
    """``count`` scenes of prompts drawn uniformly with ``rng``: prompts, images ``(N, 32, 32, 3)``
    and masks ``(N, 2, 32, 32)``."""
    chosen = [prompts[rng.randrange(len(prompts))] for _ in range(count)]
    drawn = [render(p, rng) for p in chosen]
    return chosen, np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])

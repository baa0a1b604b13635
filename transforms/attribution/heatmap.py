"""DAAM's global map of one image, and the word maps and masks derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import DEFAULT_THRESHOLD
from .words import TokenizedPrompt

__all__ = [
    "DEFAULT_THRESHOLD",
    "GlobalHeatMap",
    "expand_map",
    "heat_mask",
    "min_max",
    "normalize_rows",
    "word_heat",
    "word_mask",
]


def normalize_rows(maps: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """DAAM ``normalize=True``: divide every row by the per-pixel sum of the prompt rows + 1e-6.

    ``maps`` holds ``prefix`` rows before the prompt tokens (CLIP's start token: 1; T5: 0), the
    prompt tokens and the first end token.
    """
    return maps / (maps[prefix:-1].sum(0, keepdim=True) + 1e-6)


def expand_map(word_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a 2-D map to ``size`` (height, width), float32."""
    return F.interpolate(
        word_map[None, None].float(), size=size, mode="bicubic", align_corners=False
    )[0, 0]


def min_max(values: torch.Tensor) -> torch.Tensor:
    """DAAM's min-max normalisation: ``(x - min) / (max - min + 1e-8)``, in ``[0, 1)``."""
    return (values - values.min()) / (values.max() - values.min() + 1e-8)


def word_heat(word_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A word map resized bicubically to ``size`` (height, width) and min-max normalised."""
    return min_max(expand_map(word_map, size))


def heat_mask(heat: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """DAAM's τ rule on a ``word_heat`` map: the pixels strictly above ``threshold``."""
    return heat > threshold


def word_mask(word_map: torch.Tensor, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """DAAM mask: resize to ``size``, min-max normalise (+1e-8), keep pixels ``> threshold``."""
    return heat_mask(word_heat(word_map, size), threshold)


@dataclass
class GlobalHeatMap:
    """DAAM's global map for one image: ``prefix`` rows before the prompt tokens (CLIP's start
    token; none for T5), one row per prompt token, the first end token.

    ``maps`` has shape ``(prefix + n + 1, h, w)`` at map resolution, float32, not normalised.
    """

    tokenizer: Any
    prompt: TokenizedPrompt
    maps: torch.Tensor
    prefix: int = 1

    @property
    def token_maps(self) -> torch.Tensor:
        """One map per prompt token: ``(n, h, w)``; row ``i`` belongs to ``prompt.tokens[i]``."""
        return self.maps[self.prefix : -1]

    def normalized(self) -> "GlobalHeatMap":
        """The same map with DAAM's per-pixel normalisation over the prompt tokens."""
        return GlobalHeatMap(self.tokenizer, self.prompt, normalize_rows(self.maps, self.prefix), self.prefix)

    def word_map(self, word: str) -> torch.Tensor:
        """Mean of the rows of every token of every occurrence of ``word`` (``(h, w)``)."""
        rows = [i + self.prefix for start, end in self.prompt.spans(self.tokenizer, word) for i in range(start, end)]
        return self.maps[rows].mean(0)

    def word_mask(
        self, word: str, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD
    ) -> torch.Tensor:
        """Boolean mask of ``word`` at image ``size`` (height, width), DAAM's τ rule."""
        return word_mask(self.word_map(word), size, threshold)

    def numpy_token_maps(self, dtype: str = "float16") -> np.ndarray:
        """``token_maps`` as a numpy array of ``dtype`` for storage."""
        return self.token_maps.detach().cpu().numpy().astype(dtype)

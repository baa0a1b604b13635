"""DAAM's global map of one image, and the word maps and masks derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .words import TokenizedPrompt, token_merge_indices

DEFAULT_THRESHOLD = 0.4


def normalize_rows(maps: torch.Tensor) -> torch.Tensor:
    """DAAM ``normalize=True``: divide every row by the per-pixel sum of the prompt rows + 1e-6.

    ``maps`` holds rows ``0 … n+1`` (start token, prompt tokens, first end token).
    """
    return maps / (maps[1:-1].sum(0, keepdim=True) + 1e-6)


def expand_map(word_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a 2-D map to ``size`` (height, width), float32."""
    return F.interpolate(
        word_map[None, None].float(), size=size, mode="bicubic", align_corners=False
    )[0, 0]


def word_mask(word_map: torch.Tensor, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """DAAM mask: resize to ``size``, min-max normalise (+1e-8), keep pixels ``> threshold``."""
    big = expand_map(word_map, size)
    big = (big - big.min()) / (big.max() - big.min() + 1e-8)
    return big > threshold


@dataclass
class GlobalHeatMap:
    """Rows ``0 … n+1`` of DAAM's global map for one image (start, prompt tokens, first end token).

    ``maps`` has shape ``(n + 2, h, w)`` at latent resolution, float32, not normalised.
    """

    tokenizer: Any
    prompt: TokenizedPrompt
    maps: torch.Tensor

    @property
    def token_maps(self) -> torch.Tensor:
        """One map per prompt token: ``(n, h, w)``; row ``i`` belongs to ``prompt.tokens[i]``."""
        return self.maps[1:-1]

    def normalized(self) -> "GlobalHeatMap":
        """The same map with DAAM's per-pixel normalisation over the prompt tokens."""
        return GlobalHeatMap(self.tokenizer, self.prompt, normalize_rows(self.maps))

    def word_map(self, word: str) -> torch.Tensor:
        """Mean of the rows of every token of every occurrence of ``word`` (``(h, w)``)."""
        rows = token_merge_indices(self.tokenizer, self.prompt.tokens, word)
        return self.maps[rows].mean(0)

    def word_mask(
        self, word: str, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD
    ) -> torch.Tensor:
        """Boolean mask of ``word`` at image ``size`` (height, width), DAAM's τ rule."""
        return word_mask(self.word_map(word), size, threshold)

    def numpy_token_maps(self, dtype: str = "float16") -> np.ndarray:
        """``token_maps`` as a numpy array of ``dtype`` for storage."""
        return self.token_maps.detach().cpu().numpy().astype(dtype)

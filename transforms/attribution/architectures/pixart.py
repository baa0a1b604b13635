"""PixArt-Σ and PixArt-α (``PixArtSigmaPipeline``, ``PixArtAlphaPipeline``): cross-attention DiTs.

Each ``BasicTransformerBlock`` of the ``PixArtTransformer2DModel`` has a self-attention ``attn1``
and a cross-attention ``attn2`` over the T5 tokens: DAAM proper, as in a UNet, on one patch grid
(kind ``cross``). The pipeline keeps T5's attention mask and the transformer turns it into an
additive −10000 bias on padded keys; ``DaamCrossAttnProcessor`` adds it before its softmax, as
diffusers' ``AttnProcessor`` does, so the maps are the model's own probabilities.

Words: the pipeline lower-cases and strips the prompt (``_text_preprocessing``; with bs4 and ftfy
installed and ``clean_caption=True``, its default, it runs DeepFloyd's caption cleaner instead),
so the words are read from the text it actually encodes, through the same method. T5 pieces sit
at keys ``0 … n-1``, ``</s>`` at ``n`` (``prefix`` 0), within ``max_sequence_length`` (Σ: 300,
α: 120, read from the pipeline's own signature). Guidance: CFG batched ``[uncond; cond]``.

Resolution binning (``use_resolution_binning=True``, the pipeline's default) snaps the size to
an aspect-ratio bin and resizes the image back; it is left on, and a size off the bins is
refused before any model work (``models.family``) and by ``call_kwargs``, so the maps' grid is the
image's. Folders whose
``sample_size`` has no bin table (the pipeline raises for them) are run with binning off.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from ..words import TokenizedPrompt, tokenize_prompt
from .base import TextLayout
from .unet import UNetArchitecture


def pixart_bin_tables() -> dict[int, dict[str, list[float]]]:
    """PixArt's aspect-ratio bins (``[height, width]``) by transformer ``sample_size``
    (``pipeline_pixart_*.py``)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN,
        ASPECT_RATIO_512_BIN,
        ASPECT_RATIO_1024_BIN,
    )
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

    return {32: ASPECT_RATIO_256_BIN, 64: ASPECT_RATIO_512_BIN, 128: ASPECT_RATIO_1024_BIN, 256: ASPECT_RATIO_2048_BIN}


def bin_table(sample_size: int, tables: dict[int, dict[str, list[float]]] | None = None) -> dict[str, list[float]] | None:
    """The aspect-ratio bins a pipeline snaps sizes to for a transformer of this ``sample_size``
    (``tables``: the family's, PixArt's by default), ``None`` where it has none."""
    return (pixart_bin_tables() if tables is None else tables).get(sample_size)


def check_binned_size(
    sample_size: int,
    height: int,
    width: int,
    tables: dict[int, dict[str, list[float]]] | None = None,
    family: str = "PixArt",
) -> None:
    """``ValueError`` (one line, naming the nearest bin) for a size resolution binning would change:
    the pipeline would denoise another size and resize the image, and the maps would not fit it."""
    bins = bin_table(sample_size, tables)
    if bins is None or [float(height), float(width)] in bins.values():
        return
    nearest = min(bins.values(), key=lambda hw: abs(hw[0] / hw[1] - height / width))
    raise ValueError(
        f"--height {height} --width {width}: {family} snaps sizes to its aspect-ratio bins and resizes the image "
        f"afterwards (the maps would not fit it); pass a bin size, e.g. --height {int(nearest[0])} --width {int(nearest[1])}"
    )


def call_default(pipe: Any, name: str, fallback: Any) -> Any:
    """The default of argument ``name`` of the pipeline's own ``__call__`` (``fallback`` without one)."""
    parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    return fallback if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def encoded_text(pipe: Any, prompt: str) -> str:
    """``prompt`` as the pipeline's own call preprocesses it before tokenising: lower-cased and
    stripped, or DeepFloyd's caption cleaner where the call's ``clean_caption`` default is on and
    bs4 and ftfy are installed (without them the pipeline falls back, and warns: once is enough)."""
    from diffusers.utils import is_bs4_available, is_ftfy_available

    clean = bool(call_default(pipe, "clean_caption", False)) and is_bs4_available() and is_ftfy_available()
    return pipe._text_preprocessing(prompt, clean_caption=clean)[0]


def default_max_sequence_length(pipe: Any) -> int:
    """The text window the pipeline's own ``__call__`` uses (Σ 300, α 120)."""
    return int(call_default(pipe, "max_sequence_length", 120))


class PixArtArchitecture(UNetArchitecture):
    """PixArt transformers (any depth, width and sample size)."""

    name = "pixart"
    label = "PixArt"  # the family's name in messages

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def text_layout(self, pipe: Any) -> TextLayout:
        return TextLayout(offset=0, prefix=0, max_tokens=default_max_sequence_length(pipe) - 1)

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        tokenized = tokenize_prompt(pipe.tokenizer, encoded_text(pipe, prompt), self.text_layout(pipe).max_tokens)
        return dataclasses.replace(tokenized, prompt=prompt)  # the pipeline gets the prompt as given

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        return {name: "cross" for name in super().traced_modules(denoiser)}

    def map_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        cell = int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size)
        return height // cell, width // cell

    def bin_tables(self) -> dict[int, dict[str, list[float]]]:
        """The family's aspect-ratio bins by ``sample_size``."""
        return pixart_bin_tables()

    def call_kwargs(self, config: Any, negatives: Any, pipe: Any = None) -> dict[str, Any]:
        kwargs = super().call_kwargs(config, negatives, pipe)
        if pipe is None:
            return kwargs
        sample_size = int(pipe.transformer.config.sample_size)
        if bin_table(sample_size, self.bin_tables()) is None:  # the pipeline's default binning would raise: off
            kwargs["use_resolution_binning"] = False
        elif config.height and config.width:
            check_binned_size(sample_size, config.height, config.width, self.bin_tables(), self.label)
        return kwargs

"""One small module per denoiser architecture; ``architecture_of`` picks one for a pipeline."""

from __future__ import annotations

from typing import Any

from .base import Architecture, TextLayout
from .unet import UNetArchitecture

__all__ = ["Architecture", "TextLayout", "UNetArchitecture", "architecture_of", "register"]

_BY_PIPELINE: dict[str, Architecture] = {}
_DEFAULT = UNetArchitecture()
# pipeline class name -> (module in this package, architecture class), imported on first use
_LAZY = {
    "StableDiffusion3Pipeline": ("sd3", "SD3Architecture"),
    "FluxPipeline": ("flux", "FluxArchitecture"),
    "PixArtSigmaPipeline": ("pixart", "PixArtArchitecture"),
    "PixArtAlphaPipeline": ("pixart", "PixArtArchitecture"),
    "ChromaPipeline": ("chroma", "ChromaArchitecture"),
    "SanaPipeline": ("sana", "SanaArchitecture"),
    "ZImagePipeline": ("zimage", "ZImageArchitecture"),
    "QwenImagePipeline": ("qwenimage", "QwenImageArchitecture"),
    "Flux2KleinPipeline": ("flux2", "Flux2Architecture"),
    "Flux2Pipeline": ("flux2", "Flux2DevArchitecture"),
}


def register(pipeline_class_name: str, architecture: Architecture) -> None:
    """Make ``architecture_of`` return ``architecture`` for pipelines of this class name."""
    _BY_PIPELINE[pipeline_class_name] = architecture


def architecture_of(pipe: Any) -> Architecture:
    """The architecture of a loaded pipeline: by its class (or a base class) name; UNet pipelines
    (anything with a ``unet``) by default."""
    import importlib

    for cls in type(pipe).__mro__:
        if cls.__name__ not in _BY_PIPELINE and cls.__name__ in _LAZY:
            module, name = _LAZY[cls.__name__]
            register(cls.__name__, getattr(importlib.import_module(f"{__name__}.{module}"), name)())
        if cls.__name__ in _BY_PIPELINE:
            return _BY_PIPELINE[cls.__name__]
    if hasattr(pipe, "unet"):
        return _DEFAULT
    raise ValueError(
        f"{type(pipe).__name__} is not a supported text-to-image pipeline "
        "(Stable Diffusion 1.x/2.x/XL, Stable Diffusion 3, Flux, Chroma, PixArt-Σ/α, Sana, Z-Image, Qwen-Image or Flux.2)"
    )

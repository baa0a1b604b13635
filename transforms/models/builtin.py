"""The built-in models ``--model NAME`` resolves without a download: name → cached folder. Modules
are named, not imported, so a registry entry costs nothing until it is chosen (and the truth worlds
of ``transforms.colour_world``, which build on ``tiny_parts``, stay above this package)."""

from __future__ import annotations

import importlib
from pathlib import Path

# name -> (module, function returning the cached diffusers folder, built on first use)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "tiny": ("transforms.models.tiny_sd", "tiny_model_path"),
    "tiny-sdxl": ("transforms.models.tiny_sdxl", "tiny_sdxl_path"),
    "tiny-sd3": ("transforms.models.tiny_sd3", "tiny_sd3_path"),
    "tiny-flux": ("transforms.models.tiny_flux", "tiny_flux_path"),
    "tiny-pixart": ("transforms.models.tiny_pixart", "tiny_pixart_path"),
    "tiny-chroma": ("transforms.models.tiny_chroma", "tiny_chroma_path"),
    "tiny-sana": ("transforms.models.tiny_sana", "tiny_sana_path"),
    "tiny-zimage": ("transforms.models.tiny_zimage", "tiny_zimage_path"),
    "tiny-qwenimage": ("transforms.models.tiny_qwenimage", "tiny_qwenimage_path"),
    "tiny-flux2-klein": ("transforms.models.tiny_flux2", "tiny_flux2_klein_path"),
    "tiny-flux2": ("transforms.models.tiny_flux2", "tiny_flux2_path"),
}


# the shipped truth worlds' folders (sha256-checked assets); their names: ``family.SHIPPED_WORLDS``
SHIPPED_WORLD_ASSETS = ("transforms.colour_world.assets", "shipped_model_path")


def builtin_model_path(name: str) -> Path:
    """The folder of built-in model ``name`` (``KeyError`` for other names)."""
    module, function = BUILTIN_MODELS[name]
    return Path(getattr(importlib.import_module(module), function)())


def shipped_world_path(name: str) -> Path:
    """The checked asset folder of shipped truth world ``name`` (``OSError``/``ValueError`` when
    it is missing or does not match its manifest)."""
    module, function = SHIPPED_WORLD_ASSETS
    return Path(getattr(importlib.import_module(module), function)(name))

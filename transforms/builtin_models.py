"""The built-in models ``--model NAME`` resolves without a download: name → cached folder."""

from __future__ import annotations

import importlib
from pathlib import Path

# name -> (module, function returning the cached diffusers folder, built on first use)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "tiny": ("transforms.tiny_model", "tiny_model_path"),
    "tiny-sdxl": ("transforms.tiny_sdxl", "tiny_sdxl_path"),
    "tiny-sd3": ("transforms.tiny_sd3", "tiny_sd3_path"),
    "tiny-flux": ("transforms.tiny_flux", "tiny_flux_path"),
}


def builtin_model_path(name: str) -> Path:
    """The folder of built-in model ``name`` (``KeyError`` for other names)."""
    module, function = BUILTIN_MODELS[name]
    return Path(getattr(importlib.import_module(module), function)())

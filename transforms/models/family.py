"""Which kind of model a folder holds, read from its ``model_index.json``, and what differs per kind.

Families: ``stable-diffusion`` (SD 1.x/2.x-style UNet + VAE pipelines, the built-in ``tiny``, hub
ids), ``stable-diffusion-xl``, ``stable-diffusion-3``, ``flux``, ``chroma``, ``pixart``, ``sana``, ``zimage``, ``qwenimage``
(read from the folder's ``model_index.json``) and ``colour-world`` (``transforms.colour_world``: a
pixel-space UNet on 2x2 patches, no VAE, no self-attention, sampled without guidance). The family decides the pipeline
class, the default guidance, the image geometry and which settings the model cannot honour; how
its attention is traced is ``transforms.attribution.architectures``'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STABLE_DIFFUSION = "stable-diffusion"
STABLE_DIFFUSION_XL = "stable-diffusion-xl"
STABLE_DIFFUSION_3 = "stable-diffusion-3"
FLUX = "flux"
PIXART = "pixart"
CHROMA = "chroma"
SANA = "sana"
ZIMAGE = "zimage"
QWENIMAGE = "qwenimage"
FLUX2 = "flux2"
COLOUR_WORLD = "colour-world"
COLOUR_WORLD_MODEL_NAME = COLOUR_WORLD  # ``--model colour-world``: the shipped trained weights
# every shipped truth world (``transforms.colour_world.assets``): ``--model NAME``
SHIPPED_WORLDS = (COLOUR_WORLD, "colour-world-sa", "colour-world-dit")
DIT_PIPELINE = "ColourWorldDiTPipeline"
SD_GUIDANCE = 7.5


@dataclass(frozen=True)
class Family:
    """What a model family fixes: its pipeline class (module, name; ``None``: diffusers picks it
    from ``model_index.json``), its default guidance and whether it runs the SD memory model."""

    name: str
    pipeline: tuple[str, str] | None
    guidance_scale: float
    sd_memory_model: bool
    pixel_space: bool = False  # no VAE: images are made at the size the world was trained at


FAMILIES = {
    STABLE_DIFFUSION: Family(STABLE_DIFFUSION, None, SD_GUIDANCE, True),
    # the pipelines' own defaults: SDXL 5.0, SD3 7.0, Flux 3.5 (embedded guidance, no CFG batch)
    STABLE_DIFFUSION_XL: Family(STABLE_DIFFUSION_XL, None, 5.0, True),
    STABLE_DIFFUSION_3: Family(STABLE_DIFFUSION_3, None, 7.0, False),
    FLUX: Family(FLUX, None, 3.5, False),
    PIXART: Family(PIXART, None, 4.5, False),  # PixArt-Σ's own default (α: 4.5 too)
    CHROMA: Family(CHROMA, None, 5.0, False),  # real CFG, as two calls per step
    SANA: Family(SANA, None, 4.5, False),  # SanaPipeline's own default, CFG batched [uncond; cond]
    QWENIMAGE: Family(QWENIMAGE, None, 4.0, False),  # true_cfg_scale's default: CFG only with a negative prompt
    FLUX2: Family(FLUX2, None, 4.0, False),  # klein: true CFG as two calls (base models); dev: embedded
    # no CFG: guidance hurts this model (the colour-world study: w = 2 gives 40 % colour-correct images)
    COLOUR_WORLD: Family(COLOUR_WORLD, ("transforms.colour_world.pipeline", "ColourWorldPipeline"), 1.0, False, True),
    # ZImagePipeline's own guidance_scale (pos + s·(pos − neg): CFG when s > 0; 0 for the Turbo checkpoints)
    ZIMAGE: Family(ZIMAGE, None, 5.0, False),
}
# colour-world-dit is a Flux model (traced and checked as one) that its own pipeline class loads
COLOUR_WORLD_DIT_FAMILY = Family(FLUX, ("transforms.colour_world.dit", DIT_PIPELINE), 1.0, False, True)
# ``run --classes`` defaults per family, chosen from the ``evaluate --leaderboard`` table
# (benchmarks/results/leaderboard.json; README "Which maps make the best labels"): UNet families
# from colour-world-sa (refinement at power 1 and label threshold 0.4: 0.736 pseudo-mask mIoU;
# Dataset Diffusion's power 4 at 0.6: 0.445), joint families from colour-world-dit (plain DAAM at
# threshold 0.5: 0.799; ConceptAttention of the class names 0.045, the cross-attention baseline 0.193).
_UNET_LABELS = {"label_maps": "daam", "refine": True, "power": 1, "threshold": 0.4}
LABEL_DEFAULTS = {
    STABLE_DIFFUSION: _UNET_LABELS,
    STABLE_DIFFUSION_XL: _UNET_LABELS,
    STABLE_DIFFUSION_3: {"label_maps": "daam", "refine": False, "threshold": 0.5},
    FLUX: {"label_maps": "daam", "refine": False, "threshold": 0.5},
    # no truth world of this form yet: plain DAAM at the threshold every measured world agrees on
    PIXART: {"label_maps": "daam", "refine": False, "threshold": 0.5},
    CHROMA: {"label_maps": "daam", "refine": False, "threshold": 0.5},  # Flux's blocks: colour-world-dit's choice
    SANA: {"label_maps": "daam", "refine": False, "threshold": 0.5},  # as PixArt: no truth world of this form yet
    QWENIMAGE: {"label_maps": "daam", "refine": False, "threshold": 0.5},  # double-stream joint attention, as Flux
    FLUX2: {"label_maps": "daam", "refine": False, "threshold": 0.5},  # Flux's joint blocks: as Flux
    # no self-attention: plain DAAM at its best threshold (0.712 at 0.5, 0.671 at 0.6)
    COLOUR_WORLD: {"label_maps": "daam", "refine": False, "threshold": 0.5},
    ZIMAGE: {"label_maps": "daam", "refine": False, "threshold": 0.5},  # joint attention: colour-world-dit's choice
}
# colour-world-sa's own best recipe: its finest self-attention (16x16, factor 1)
COLOUR_WORLD_SA_LABELS = {"label_maps": "daam", "refine": True, "refine_factor": 1, "power": 1, "threshold": 0.4}
_BY_PIPELINE_CLASS = {
    "ColourWorldPipeline": COLOUR_WORLD,
    "StableDiffusionXLPipeline": STABLE_DIFFUSION_XL,
    "StableDiffusion3Pipeline": STABLE_DIFFUSION_3,
    "FluxPipeline": FLUX,
    "PixArtSigmaPipeline": PIXART,
    "PixArtAlphaPipeline": PIXART,
    "ChromaPipeline": CHROMA,
    "SanaPipeline": SANA,
    "ZImagePipeline": ZIMAGE,
    "QwenImagePipeline": QWENIMAGE,
    "Flux2KleinPipeline": FLUX2,
    "Flux2Pipeline": FLUX2,
}


# DiT families whose self-attention is not wired to --refine: what their traced layers are
_NO_REFINEMENT = {ZIMAGE: "Z-Image's single-stream layers", QWENIMAGE: "Qwen-Image's joint blocks",
                  FLUX2: "Flux.2's joint blocks"}
SUPPORTED_FAMILIES = (
    "Stable Diffusion 1.x/2.x (any UNet text-to-image pipeline), Stable Diffusion XL, Stable Diffusion 3/3.5, "
    "FLUX.1, Chroma, PixArt-Σ/α, Sana, Z-Image, Qwen-Image, Flux.2, the colour worlds"
)


def folder_json(source: str | None, *parts: str) -> dict[str, Any] | None:
    """A JSON object in a local model folder (``model_index.json``, ``unet/config.json``, …);
    ``None`` for hub ids, missing or unreadable files and non-objects."""
    if not source:
        return None
    try:
        data = json.loads(Path(source).expanduser().joinpath(*parts).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pipeline_class_name(source: str) -> str | None:
    """``_class_name`` of a local model folder's ``model_index.json`` (``None`` for hub ids or an
    unreadable index: the loader reports those)."""
    name = (folder_json(source, "model_index.json") or {}).get("_class_name")
    return name if isinstance(name, str) else None


def unsupported_family(source: str) -> str | None:
    """The pipeline class of a local folder no family here traces (a denoiser that is not a UNet
    under a class of no known family, e.g. ``HiDreamImagePipeline``), else ``None``."""
    components = folder_json(source, "model_index.json") or {}
    name = components.get("_class_name")
    if not isinstance(name, str) or name in _BY_PIPELINE_CLASS or name == DIT_PIPELINE or "unet" in components:
        return None
    return name


def family_of(source: str) -> Family:
    """The family of a resolved model source (folder or hub id)."""
    name = pipeline_class_name(source) or ""
    if name == DIT_PIPELINE:
        return COLOUR_WORLD_DIT_FAMILY
    return FAMILIES[_BY_PIPELINE_CLASS.get(name, STABLE_DIFFUSION)]


def default_guidance(model: str) -> float:
    """Guidance for runs that do not pass ``--guidance-scale``: the model family's."""
    from .builtin import BUILTIN_MODELS, builtin_model_path

    if model in SHIPPED_WORLDS:
        return FAMILIES[COLOUR_WORLD].guidance_scale  # every world is sampled without guidance
    if model in BUILTIN_MODELS:
        return family_of(str(builtin_model_path(model))).guidance_scale
    return family_of(model).guidance_scale if Path(model).expanduser().is_dir() else SD_GUIDANCE


def label_defaults(model: str) -> dict[str, Any]:
    """``run --classes`` defaults (``label_maps``, ``refine`` and, where chosen, ``refine_factor``,
    ``power``, ``threshold``) of a ``--model`` value's family; the shipped worlds: their own best
    recipe (refinement only where there is self-attention)."""
    from .builtin import BUILTIN_MODELS, builtin_model_path

    if model == "colour-world-sa":
        return dict(COLOUR_WORLD_SA_LABELS)
    if model == "colour-world-dit":
        return dict(LABEL_DEFAULTS[FLUX])
    if model == COLOUR_WORLD:
        return dict(LABEL_DEFAULTS[COLOUR_WORLD])
    source = str(builtin_model_path(model)) if model in BUILTIN_MODELS else model
    family = family_of(source) if Path(source).expanduser().is_dir() else FAMILIES[STABLE_DIFFUSION]
    defaults = dict(LABEL_DEFAULTS[family.name])
    if family.name == COLOUR_WORLD and colour_world_self_attention(source):
        defaults = dict(COLOUR_WORLD_SA_LABELS)
    return defaults


def pipeline_class(family: Family) -> Any:
    """The pipeline class that loads a folder of ``family`` (``DiffusionPipeline`` for SD)."""
    import importlib

    import diffusers

    if family.pipeline is None:
        return diffusers.DiffusionPipeline
    module, name = family.pipeline
    return getattr(importlib.import_module(module), name)


def colour_world_geometry(source: str) -> tuple[int, int, int]:
    """(height, width, pixels per map cell) of a colour-world folder: its UNet's patch grid times
    the patch; colour-world-dit: its pipeline class's side and packing (32x32 pixels packed 2x2)."""
    if pipeline_class_name(source) == DIT_PIPELINE:
        dit = pipeline_class(COLOUR_WORLD_DIT_FAMILY)  # loaded by name, as for loading the folder
        return dit.side, dit.side, dit.packing
    config = json.loads((Path(source) / "unet" / "config.json").read_text(encoding="utf-8"))
    patch, grid = int(config["patch_size"]), int(config["sample_size"])
    return grid * patch, grid * patch, patch


def check_family_settings(
    family: Family,
    size: tuple[int, int],
    native: tuple[int, int],
    scheduler: str | None,
    refine: bool,
    negative_prompt: str | None = None,
    concept_maps: bool = False,
    source: str | None = None,
) -> None:
    """Refuse, with one line, settings a model of ``family`` (the folder ``source``) cannot
    honour (``ValueError``)."""
    if concept_maps and family.name == CHROMA:
        from transforms.attribution.architectures.chroma import CONCEPTS_REFUSED

        raise ValueError(CONCEPTS_REFUSED)
    if concept_maps and family.name == QWENIMAGE:
        from transforms.attribution.architectures.qwenimage import CONCEPTS_REFUSED as QWEN_CONCEPTS_REFUSED

        raise ValueError(QWEN_CONCEPTS_REFUSED)
    if concept_maps and family.name == FLUX2:
        from transforms.attribution.architectures.flux2 import CONCEPTS_REFUSED as FLUX2_CONCEPTS_REFUSED

        raise ValueError(FLUX2_CONCEPTS_REFUSED)
    if concept_maps and family.name not in (FLUX, STABLE_DIFFUSION_3):
        raise ValueError(
            f"ConceptAttention maps (--concept-maps, --label-maps concept) need a joint-attention transformer "
            f"(SD3, Flux); this {family.name} model has no double-stream blocks: drop them (--label-maps daam)"
        )
    if scheduler and family.name in (FLUX, STABLE_DIFFUSION_3, CHROMA, ZIMAGE, QWENIMAGE, FLUX2):
        raise ValueError(
            f"--scheduler {scheduler}: {family.name} samples with flow matching (its own FlowMatchEulerDiscreteScheduler); "
            "the --scheduler choices are noise-prediction samplers for SD/SDXL: drop --scheduler"
        )
    if family.name == FLUX and negative_prompt:
        raise ValueError("--negative-prompt: Flux is guidance-distilled (no negative branch is traced); drop it")
    if family.name == FLUX2 and negative_prompt:
        from transforms.attribution.architectures.flux2 import NEGATIVE_REFUSED

        raise ValueError(f"--negative-prompt: {NEGATIVE_REFUSED}")
    if family.pixel_space and size != native:
        raise ValueError(
            f"colour-world makes {native[1]}x{native[0]} images (the size it was trained at); "
            f"drop --height/--width or pass {native[0]}"
        )
    if family.name == PIXART:
        _check_pixart_settings(size, refine, source)
    if family.name == SANA:
        _check_sana_settings(size, scheduler, refine, source)
    if refine and family.name in _NO_REFINEMENT:
        raise ValueError("--refine: self-attention refinement is measured and wired for UNet models and "
                         f"colour-world-sa, not {_NO_REFINEMENT[family.name]}: add --no-refine")
    if family.name != COLOUR_WORLD:
        return
    if scheduler:
        raise ValueError(f"--scheduler {scheduler}: colour-world samples with its own DDIM on a continuous schedule; drop --scheduler")
    if refine and not colour_world_self_attention(source):
        raise ValueError("this colour-world model has no self-attention to refine class maps with: add --no-refine "
                         "(or use the colour-world-sa form)")


def _check_pixart_settings(
    size: tuple[int, int], refine: bool, source: str | None, label: str = "PixArt", tables: Any = None
) -> None:
    """PixArt (and Sana: ``label``, its bin ``tables``): no refinement (its DiT self-attention is not
    wired to ``--refine``), and a size the pipeline's resolution binning keeps (else it denoises
    another size and resizes the image)."""
    if refine:
        raise ValueError("--refine: self-attention refinement is measured and wired for UNet models and "
                         f"colour-world-sa, not {label}'s DiT blocks: add --no-refine")
    from transforms.attribution.architectures.pixart import check_binned_size

    config = folder_json(source, "transformer", "config.json")
    if config is None:
        return  # a hub id: the pipeline's call checks the size (the architecture refuses off-bin sizes)
    check_binned_size(int(config.get("sample_size", 0)), *size, tables, label)


def _check_sana_settings(size: tuple[int, int], scheduler: str | None, refine: bool, source: str | None) -> None:
    """Sana: PixArt's refusals with Sana's bin tables, and no ``--scheduler`` (it samples with
    DPM-Solver on flow sigmas; the choices are noise-prediction samplers)."""
    if scheduler:
        raise ValueError(f"--scheduler {scheduler}: Sana samples flow predictions with its own DPM-Solver "
                         "(flow sigmas); the --scheduler choices are noise-prediction samplers for SD/SDXL: "
                         "drop --scheduler")
    from transforms.attribution.architectures.sana import sana_bin_tables

    _check_pixart_settings(size, refine, source, "Sana", sana_bin_tables())


def colour_world_self_attention(source: str | None) -> bool:
    """Whether a colour-world folder's UNet has self-attention (the ``colour-world-sa`` form)."""
    return bool((folder_json(source, "unet", "config.json") or {}).get("self_attention", False))


def double_stream_blocks(source: str) -> int | None:
    """The double-stream (joint) blocks of an SD3/Flux folder's transformer (``num_layers`` of its
    config), ``None`` where the folder does not say (a hub id)."""
    layers = (folder_json(source, "transformer", "config.json") or {}).get("num_layers")
    return int(layers) if isinstance(layers, int) else None

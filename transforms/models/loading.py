"""Resolve ``--model`` (``tiny``, ``colour-world``, a local folder or a hub id) and load a diffusers
pipeline of its family (``model_family``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transforms.attribution.architectures import architecture_of
from .family import (
    CHROMA,
    FLUX,
    FLUX2,
    PIXART,
    SANA,
    QWENIMAGE,
    SHIPPED_WORLDS,
    STABLE_DIFFUSION,
    STABLE_DIFFUSION_3,
    SUPPORTED_FAMILIES,
    ZIMAGE,
    colour_world_geometry,
    family_of,
    folder_json,
    pipeline_class,
    pipeline_class_name,
    unsupported_family,
)
from .builtin import BUILTIN_MODELS, builtin_model_path, shipped_world_path
from .tiny_sd import TINY_MODEL_NAME

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}
IMAGE_CONDITIONED = ("Img2Img", "Inpaint", "Refiner", "ControlNet", "InstructPix2Pix")
TRANSFORMER_FAMILIES = (STABLE_DIFFUSION_3, FLUX, CHROMA, PIXART, SANA, ZIMAGE, QWENIMAGE, FLUX2)
FLUX_DEFAULT_SAMPLE_SIZE = 128
ZIMAGE_DEFAULT_SIZE = 1024
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model could not be resolved or loaded; the message is meant for the user as is."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how: ``model`` is ``tiny``, a local folder or a hub id; ``compile``
    (``--compile``) asks for ``torch.compile`` of the denoiser."""

    model: str = TINY_MODEL_NAME
    revision: str | None = None
    scheduler: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False

    def resolved_device(self) -> str:
        """``auto`` → ``cuda`` when available, else ``cpu``."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def _check_hub_model(model: str, revision: str | None) -> None:
    """Fail fast with one line when a hub model is neither cached nor reachable."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(try_to_load_from_cache(model, "model_index.json", revision=revision), str):
        return
    try:
        HfApi().model_info(model, revision=revision, timeout=10)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelLoadError(f"--model {model}: no such model (or revision) on the Hugging Face Hub") from None
    except Exception as error:  # network stacks raise many types; all mean "unreachable" here
        logger.debug("hub check failed: %r", error)
        raise ModelLoadError(
            f"--model {model}: cannot reach the Hugging Face Hub (offline?) and it is not in the local "
            f"cache; pass a local diffusers folder with --model PATH, or --model tiny"
        ) from None


def resolve_model_source(model: str, revision: str | None = None) -> str:
    """Map ``--model`` to a local folder or a hub id, failing early with one clear line."""
    if model in BUILTIN_MODELS:
        return str(builtin_model_path(model))
    if model in SHIPPED_WORLDS:
        try:
            return str(shipped_world_path(model))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"--model {model}: {error}") from None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"--model {model}: {path} is not a diffusers model folder (no model_index.json)"
            )
        kind = pipeline_class_name(str(path)) or ""
        if any(marker in kind for marker in IMAGE_CONDITIONED):
            raise ModelLoadError(
                f"--model {model}: {kind} generates from an image (an SDXL refiner or an img2img/inpainting "
                "model); pass a text-to-image model folder"
            )
        unsupported = unsupported_family(str(path))
        if unsupported:
            raise ModelLoadError(
                f"--model {model}: {unsupported} is not a family daam-datasets traces; supported: {SUPPORTED_FAMILIES}"
            )
        return str(path)
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelLoadError(
            f"--model {model}: no such model folder; pass a diffusers folder, a hub id "
            f"(org/name), one of the built-ins ({', '.join(BUILTIN_MODELS)}) or a shipped world ({', '.join(SHIPPED_WORLDS)})"
        )
    _check_hub_model(model, revision)
    return model


_OFFLINE_MARKERS = (
    "offline", "connect", "resolve", "network", "timed out", "max retries",
    "outgoing traffic", "not fully cached", "fetch metadata from the hub",
)


def _load_error(spec: ModelSpec, source: str, error: Exception) -> ModelLoadError:
    """One clear line for a failed load; hub ids that cannot be reached say so."""
    text = f"{type(error).__name__}: {error}".lower()
    if source == spec.model and any(marker in text for marker in _OFFLINE_MARKERS):
        return ModelLoadError(
            f"--model {spec.model}: cannot download from the Hugging Face Hub (offline or "
            f"unreachable); pass a local diffusers folder with --model PATH, or --model tiny"
        )
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(f"--model {spec.model}: cannot load: {first_line}")


def absent_components(source: str) -> dict[str, None]:
    """Components a local folder's ``model_index.json`` records as ``[null, null]`` (saved as
    ``None``, e.g. SD3 without T5): diffusers loads them only when they are passed as ``None``."""
    entries = folder_json(source, "model_index.json") or {}
    return {name: None for name, value in entries.items() if not name.startswith("_") and value == [None, None]}


def low_cpu_mem_usage() -> bool:
    """diffusers' recommended loading (weights straight into an empty model, not into a random
    one first: one copy of the weights in memory, not two) needs ``accelerate``."""
    from diffusers.utils import is_accelerate_available

    return is_accelerate_available()


def compile_denoiser(pipe: Any) -> None:
    """``torch.compile`` the pipeline's denoiser in place (``nn.Module.compile``: module names,
    and so processor names, stay as they are). The recording processors run outside the graph
    (``RecordingProcessor``), so traced layers compute exactly what they compute uncompiled."""
    denoiser = architecture_of(pipe).denoiser(pipe)
    denoiser.compile()
    logger.info("compiling %s with torch.compile (the first calls of each shape are slow)", type(denoiser).__name__)
    if denoiser.device.type == "cpu":
        logger.warning("--compile on CPU: measured slower than eager here (1.45x per traced SD-1.5-shaped call; "
                       "docs/performance.md); it is meant for GPUs")


def load_pipeline(spec: ModelSpec, low_memory: bool | None = None) -> Any:
    """Load a Stable Diffusion pipeline for ``spec`` on its device, progress bars off.

    ``low_memory``: diffusers' ``low_cpu_mem_usage`` (default: on when ``accelerate`` is
    installed, ``low_cpu_mem_usage()``).
    """
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    source = resolve_model_source(spec.model, spec.revision)
    if spec.dtype not in DTYPES:
        raise ModelLoadError(f"--dtype {spec.dtype}: choose one of {', '.join(DTYPES)}")
    family = family_of(source)
    # Stable Diffusion folders may name a safety checker: never loaded (the dataset is the output)
    no_checker = {"safety_checker": None, "requires_safety_checker": False} if family.name == STABLE_DIFFUSION else {}
    try:
        pipe = pipeline_class(family).from_pretrained(
            source, revision=spec.revision, dtype=DTYPES[spec.dtype],
            low_cpu_mem_usage=low_cpu_mem_usage() if low_memory is None else low_memory,
            **{**absent_components(source), **no_checker},
        )
    except (OSError, ValueError) as error:
        raise _load_error(spec, source, error) from error
    try:
        architecture_of(pipe)
    except ValueError as error:
        raise ModelLoadError(f"--model {spec.model}: {error}") from None
    if getattr(pipe, "tokenizer", None) is None:
        raise ModelLoadError(f"--model {spec.model}: the folder has no tokenizer")
    if spec.scheduler:
        if spec.scheduler not in SCHEDULERS:
            raise ModelLoadError(f"--scheduler {spec.scheduler}: choose one of {', '.join(SCHEDULERS)}")
        cls = getattr(diffusers, SCHEDULERS[spec.scheduler])
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe = pipe.to(spec.resolved_device())
    pipe.set_progress_bar_config(disable=True)
    if spec.compile:
        compile_denoiser(pipe)
    logger.info("loaded %s (%s) on %s", spec.model, type(pipe).__name__, spec.resolved_device())
    return pipe



def vae_scale_factor(vae: dict[str, Any]) -> int:
    """The spatial downsampling of a VAE config: 2 per block after the first (``AutoencoderKL``;
    Sana's ``AutoencoderDC`` names its stages ``encoder_block_out_channels``), or 2 per
    ``temperal_downsample`` entry (Qwen-Image's Wan-style ``AutoencoderKLQwenImage``)."""
    if "temperal_downsample" in vae:
        return 2 ** len(vae["temperal_downsample"])
    return 2 ** (len(vae.get("block_out_channels") or vae["encoder_block_out_channels"]) - 1)


def model_geometry(spec: ModelSpec, source: str | None = None) -> tuple[int, int, int]:
    """(default height, default width, pixels per map cell: the VAE factor, times the patch size
    for transformers) read from the model's configs, no weights."""
    from diffusers import AutoencoderKL

    source = source or resolve_model_source(spec.model, spec.revision)
    if family_of(source).pixel_space:
        try:
            return colour_world_geometry(source)
        except (OSError, ValueError, KeyError) as error:
            raise _load_error(spec, source, error) from error
    transformer = family_of(source).name in TRANSFORMER_FAMILIES
    try:
        # any model class reads a config.json
        denoiser = AutoencoderKL.load_config(source, subfolder="transformer" if transformer else "unet", revision=spec.revision)
        vae = AutoencoderKL.load_config(source, subfolder="vae", revision=spec.revision)
        scale = vae_scale_factor(vae)
        # Flux's transformer config has no sample size: its pipeline's default is 128 latents (1024 px)
        sample = denoiser.get("sample_size", FLUX_DEFAULT_SAMPLE_SIZE)
        if family_of(source).name == ZIMAGE:
            sample = ZIMAGE_DEFAULT_SIZE // scale  # ZImagePipeline's own default: 1024 px at any VAE factor
        # SD3 patchifies in its transformer; Flux's, Chroma's, Qwen-Image's and Flux.2's pipelines pack 2x2
        # latents (their configs say 1)
        packed = family_of(source).name in (FLUX, CHROMA, QWENIMAGE, FLUX2)
        patch = (2 if packed else int(denoiser.get("patch_size", 2))) if transformer else 1
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _load_error(spec, source, error) from error
    height, width = (sample, sample) if isinstance(sample, int) else sample
    # maps of a transformer are on its patch grid: one map pixel per patch of the latent
    return int(height) * scale, int(width) * scale, scale * patch

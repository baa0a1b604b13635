"""A run's trace selection resolved against its model before any generation: which text-attention
modules ``--layers``/``--factors`` trace, which steps ``--step-range`` keeps, the time bins of
``--per-timestep``; refused in one line when it selects nothing; recorded in ``run.json``.

The model's modules come from its denoiser built from its config on torch's meta device (no
weights, no storage; the same ``Architecture.traced_modules`` the tracer installs on). A module's
latent factor is read from its place: a UNet's ``down_blocks.i`` work at ``2**i``, ``up_blocks.j``
at ``2**(levels-1-j)``, the mid block at the coarsest level; joint-attention transformers (SD3,
Flux) attend on one patch grid (factor 1); modules of other kinds (colour-world) have no known
factor and are kept by every ``--factors``.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .attribution.architectures import Architecture, architecture_of
from .attribution.config import GenerationConfig, TraceConfig

PATCH_GRID_KINDS = ("joint", "double", "single")
DENOISERS = ("transformer", "unet")  # model_index.json components holding the denoiser
SHOWN_NAMES = 1
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextModule:
    """A module that attends to text: its processor name, kind, latent factor (``None``: not
    known) and heads."""

    name: str
    kind: str
    factor: int | None
    heads: int | None


def module_factor(name: str, kind: str, levels: int) -> int | None:
    """The latent factor of a text-attention module from its name and kind (module docstring)."""
    if kind in PATCH_GRID_KINDS:
        return 1
    parts = name.split(".")
    if kind == "mid":
        return 2 ** (levels - 1)
    if kind in ("down", "up") and len(parts) > 1 and parts[1].isdigit():
        index = int(parts[1])
        return 2 ** (index if kind == "down" else levels - 1 - index)
    return None


def text_modules(denoiser: Any, architecture: Architecture) -> list[TextModule]:
    """Every module of ``denoiser`` that attends to text, in name order."""
    levels = len(getattr(denoiser.config, "block_out_channels", None) or (1,))
    modules = []
    for name, kind in sorted(architecture.traced_modules(denoiser).items()):
        attention = denoiser.get_submodule(name.removesuffix(".processor"))
        heads = getattr(attention, "heads", None)
        modules.append(TextModule(name, kind, module_factor(name, kind, levels), None if heads is None else int(heads)))
    return modules


def _import(library: str, class_name: str) -> Any:
    return getattr(importlib.import_module(library), class_name)


def meta_denoiser(source: str, revision: str | None = None) -> tuple[Any, Architecture, str]:
    """The denoiser of a model folder or hub id built on the meta device, its architecture and
    the pipeline class name (from ``model_index.json``; configs only)."""
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(source, revision=revision)
    component = next(c for c in DENOISERS if c in index)
    cls = _import(*index[component])
    config = cls.load_config(source, subfolder=component, revision=revision)
    with torch.device("meta"):
        denoiser = cls.from_config(config)
    pipeline = str(index["_class_name"])
    # architecture_of reads the pipeline's class names (and whether it has a UNet): a stand-in
    # of that class name stands for the pipeline that is not loaded
    stand_in = type(pipeline, (), {component: None})()
    return denoiser, architecture_of(stand_in), pipeline


@lru_cache(maxsize=8)
def _unet_modules(config_json: str) -> tuple[TextModule, ...]:
    from diffusers import UNet2DConditionModel

    from .attribution.architectures import UNetArchitecture

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads(config_json))
    return tuple(text_modules(unet, UNetArchitecture()))


def unet_modules(config: dict[str, Any]) -> list[TextModule]:
    """The cross-attention modules of a ``UNet2DConditionModel`` config (built on the meta device)."""
    return list(_unet_modules(json.dumps(dict(config), sort_keys=True, default=list)))


def traced(modules: list[TextModule], trace: TraceConfig) -> list[TextModule]:
    """The modules ``trace`` records: selected by ``layers``, at a kept factor (or an unknown one)."""
    return [m for m in modules if trace.keeps_module(m.name, m.kind) and (m.factor is None or trace.keeps_factor(m.factor))]


def _chosen(trace: TraceConfig) -> str:
    return f"--layers {trace.layers}" + (f" --factors {','.join(map(str, trace.factors))}" if trace.factors else "")


def _factors(modules: list[TextModule]) -> str:
    return ", ".join(str(f) for f in sorted({m.factor for m in modules if m.factor is not None}))


def check_selection(modules: list[TextModule], trace: TraceConfig) -> list[TextModule]:
    """The traced modules; ``ValueError`` (one line) when a ``--layers`` selector matches no
    module of the model or the whole selection traces none."""
    kinds = ", ".join(dict.fromkeys(m.kind for m in modules))
    for selector in trace.selectors:
        if not any(trace.selector_matches(selector, m.name, m.kind) for m in modules):
            names = ", ".join(m.name for m in modules[:SHOWN_NAMES])
            raise ValueError(
                f"--layers {trace.layers}: {selector!r} matches no text-attention module of this model "
                f"({len(modules)} modules of kinds {kinds}, e.g. {names})"
            )
    kept = traced(modules, trace)
    if not kept:
        if trace.layers == "reference":
            why = "--layers reference leaves out the mid block and factor 8"
        else:
            why = f"the modules --layers {trace.layers} selects are at factors {_factors([m for m in modules if trace.keeps_module(m.name, m.kind)])}"
        raise ValueError(
            f"{_chosen(trace)}: traces no cross-attention layer of this model (it has cross-attention at "
            f"factors {_factors(modules)}; {why})"
        )
    return kept


def _given_steps(trace: TraceConfig) -> str | None:
    """``--step-range`` as given: fractions (``0.2:0.8``), indices (``5:``) or ``None``."""
    if trace.step_fractions is not None:
        start, stop = trace.step_fractions
        return f"{start!r}:{stop!r}"
    if trace.step_range is not None:
        start, stop = trace.step_range
        return f"{start}:{'' if stop is None else stop}"
    return None


def selection_record(
    modules: list[TextModule], generation: GenerationConfig, architecture: str, pipeline: str
) -> dict[str, Any]:
    """``run.json``'s ``trace``: the selection as given and as resolved for this model."""
    trace = generation.trace
    kept = check_selection(modules, trace)
    counts: dict[str, int] = {}
    for module in kept:
        counts[module.kind] = counts.get(module.kind, 0) + 1
    return {
        "architecture": architecture,
        "pipeline": pipeline,
        "layers": trace.layers,
        "factors": None if trace.factors is None else list(trace.factors),
        "modules": counts,
        "traced": [m.name for m in kept],
        "steps": generation.steps,
        "step_range": {"given": _given_steps(trace), "resolved": list(trace.traced_steps(generation.steps))},
        "heads": trace.heads,
        "joint_normalize": trace.joint_normalize,
        "per_timestep": trace.per_timestep,
        "timestep_bins": [list(b) for b in trace.step_bins(generation.steps)],
    }


def resolve_selection(source: str, revision: str | None, generation: GenerationConfig) -> dict[str, Any] | None:
    """Build the model's denoiser on the meta device and resolve the run's selection against it
    (``ValueError`` in one line when it selects nothing). ``None`` when the denoiser cannot be
    built from its config: loading the model reports that folder's error, as for any run."""
    try:
        denoiser, architecture, pipeline = meta_denoiser(source, revision)
        modules = text_modules(denoiser, architecture)
    except Exception as error:  # configs and model classes of a broken folder raise many types
        logger.debug("cannot resolve the trace selection without loading %s: %r", source, error)
        return None
    return selection_record(modules, generation, architecture.name, pipeline)

"""Typed settings of the attribution tracer."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from .steps import resolve_fractions, step_bins

HeadAggregation = Literal["mean", "max"]
JointNormalization = Literal["all", "text"]
LabelMaps = Literal["daam", "concept"]
ConceptSpace = Literal["output", "cross-attention"]
CONCEPT_SPACES = ("output", "cross-attention")
LABEL_MAP_KINDS = ("daam", "concept")
LAYER_PRESETS = ("reference", "all")
LAYER_KINDS = ("down", "mid", "up", "joint", "double", "single", "cross")  # UNet, SD3, Flux, PixArt text-attention kinds
_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+", re.ASCII)
DEFAULT_THRESHOLD = 0.4  # τ of DAAM's word masks (the paper's best value)
DEFAULT_CMAP = "jet"  # the colour map of DAAM's plot_overlay


def parse_layers(value: str) -> str:
    """``--layers`` in its recorded form: a preset (``reference``, ``all``) or a comma list of
    selectors (block kinds of ``LAYER_KINDS`` and/or fnmatch globs over processor names), stripped,
    duplicates dropped, order kept (``ValueError`` for an empty item or a character no module name
    or glob has)."""
    text = value.strip()
    if text in LAYER_PRESETS:
        return text
    items = list(dict.fromkeys(part.strip() for part in text.split(",")))
    bad = [item for item in items if not _GLOB.fullmatch(item) or item in LAYER_PRESETS]
    if bad:
        raise ValueError(
            f"{bad[0]!r} is not a layer selector: give 'reference', 'all' or a comma list of block kinds "
            f"({', '.join(LAYER_KINDS)}) and processor-name globs (e.g. up_blocks.1.*)"
        )
    return ",".join(items)



DEFAULT_LAST_BLOCKS = 4  # the official pipeline's layers: the last four double-stream blocks
MAX_CONCEPTS = 64


@dataclass(frozen=True)
class ConceptConfig:
    """Which concepts, blocks and steps make the ConceptAttention maps (``--concept-maps``).

    Attributes:
        concepts: one list for every prompt (``--concepts``); ``None``: each prompt's matched
            ``--classes`` names, else its content words.
        blocks: ``(start, stop)`` double-stream block indices (``stop`` exclusive, ``None`` = to
            the last); ``None``: the last ``DEFAULT_LAST_BLOCKS``.
        step_range: ``(start, stop)`` denoising steps (``None``: every step).
        space: ``"output"`` (ConceptAttention: concept · image attention outputs) or
            ``"cross-attention"`` (the paper's baseline: image queries · concept keys, after
            QK-norm, before the rotary embedding; the same softmax over concepts).
    """

    concepts: tuple[str, ...] | None = None
    blocks: tuple[int, int | None] | None = None
    step_range: tuple[int, int | None] | None = None
    space: ConceptSpace = "output"

    def __post_init__(self) -> None:
        if self.space not in CONCEPT_SPACES:
            raise ValueError(f"concept space must be one of {', '.join(CONCEPT_SPACES)}, got {self.space!r}")
        if self.concepts is not None:
            names = tuple(dict.fromkeys(c.strip() for c in self.concepts if c.strip()))
            if not names:
                raise ValueError("concepts is empty: give at least one concept word")
            if len(names) > MAX_CONCEPTS:
                raise ValueError(f"{len(names)} concepts given; at most {MAX_CONCEPTS}")
            object.__setattr__(self, "concepts", names)
        for name in ("blocks", "step_range"):
            value = getattr(self, name)
            if value is not None:
                start, stop = value
                if start < 0 or (stop is not None and stop <= start):
                    raise ValueError(f"concept {name} must be (start >= 0, stop > start), got {value!r}")
                object.__setattr__(self, name, (int(start), None if stop is None else int(stop)))

    def block_indices(self, num_blocks: int) -> list[int]:
        """The selected double-stream blocks of a model with ``num_blocks`` (``ValueError`` if none)."""
        if self.blocks is None:
            start, stop = max(0, num_blocks - DEFAULT_LAST_BLOCKS), num_blocks
        else:
            start, stop = self.blocks[0], min(self.blocks[1] or num_blocks, num_blocks)
        if stop <= start:
            raise ValueError(f"concept blocks {self.blocks} select none of the model's {num_blocks} double-stream blocks")
        return list(range(start, stop))

    def keeps_step(self, step: int) -> bool:
        """Whether denoising step ``step`` (0-based) contributes."""
        if self.step_range is None:
            return True
        start, stop = self.step_range
        return step >= start and (stop is None or step < stop)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (run.json); the default space is left out (earlier runs' fingerprints)."""
        data = asdict(self)
        if data["space"] == "output":
            del data["space"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptConfig":
        """Inverse of ``to_dict``."""
        return cls(**{k: v if v is None or k == "space" else tuple(v) for k, v in data.items()})


@dataclass(frozen=True)
class TraceConfig:
    """How cross-attention is captured and aggregated into per-token maps.

    Attributes:
        layers: ``"reference"`` reproduces DAAM 0.2.0: cross-attention of the UNet's down and up
            blocks only, maps at latent factor 8 dropped. ``"all"`` also captures the mid block
            and every factor (SDXL-style models have cross-attention there). Otherwise a comma
            list of selectors: block kinds (``down``, ``mid``, ``up``; SD3 ``joint``; Flux
            ``double``, ``single``) and fnmatch globs over processor names, with or without the
            ``.processor`` suffix (``up_blocks.1.*``, ``single_transformer_blocks.3*``); a module
            is traced when any selector matches it, at every factor.
        factors: optional subset of latent downsampling factors to keep (e.g. ``(1, 2)``);
            applied on top of ``layers``.
        step_range: optional ``(start, stop)`` of denoising step indices to accumulate
            (``stop`` exclusive, ``None`` = to the end). DAAM sums over all steps.
        step_fractions: the range as fractions ``(start, stop)`` of the steps, when given so;
            ``GenerationConfig`` resolves it into ``step_range`` (``steps.fraction_index``).
        normalize: divide each row per pixel by the sum of the prompt-token rows (+1e-6), as
            DAAM's ``normalize=True``. Stored maps are raw by default.
        heads: ``"mean"`` (DAAM) or ``"max"`` over the heads of each traced call.
        joint_normalize: joint-attention models (SD3, Flux): ``"all"`` keeps the model's own
            softmax over every key (text and image); ``"text"`` renormalises over text keys.
        per_timestep: ``K`` time bins: the traced steps split into ``K`` contiguous bins
            (``steps.step_bins``), each with its own maps besides the global ones.

    Example:
        >>> config = TraceConfig(layers="up, mid_block.*", factors=(2, 1), step_range=(0, 10))
        >>> config.layers, config.factors, config.keeps_module("mid_block.attentions.0.transformer_blocks.0.attn2.processor")
        ('up,mid_block.*', (1, 2), True)
    """

    layers: str = "reference"
    factors: tuple[int, ...] | None = None
    step_range: tuple[int, int | None] | None = None
    step_fractions: tuple[float, float] | None = None
    normalize: bool = False
    heads: HeadAggregation = "mean"
    joint_normalize: JointNormalization = "all"
    per_timestep: int | None = None

    def __post_init__(self) -> None:
        if self.heads not in ("mean", "max"):
            raise ValueError(f"heads must be 'mean' or 'max', got {self.heads!r}")
        if self.joint_normalize not in ("all", "text"):
            raise ValueError(f"joint_normalize must be 'all' or 'text', got {self.joint_normalize!r}")
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.factors is not None:
            if not self.factors or any(f < 1 or f & (f - 1) for f in self.factors):
                raise ValueError(f"factors must be powers of two >= 1, got {self.factors!r}")
            object.__setattr__(self, "factors", tuple(sorted(set(self.factors))))
        if self.step_range is not None:
            start, stop = self.step_range
            if start < 0 or (stop is not None and stop <= start):
                raise ValueError(f"step_range must be (start >= 0, stop > start), got {self.step_range!r}")
        if self.step_fractions is not None:
            start, stop = self.step_fractions
            if not 0.0 <= start < stop <= 1.0:
                raise ValueError(f"step_fractions must be 0 <= start < stop <= 1, got {self.step_fractions!r}")
        if self.per_timestep is not None and self.per_timestep < 1:
            raise ValueError(f"per_timestep must be >= 1 time bins, got {self.per_timestep}")

    @property
    def selectors(self) -> tuple[str, ...]:
        """The layer selectors (empty for the ``reference`` and ``all`` presets)."""
        return () if self.layers in LAYER_PRESETS else tuple(self.layers.split(","))

    def selector_matches(self, selector: str, processor_name: str, kind: str | None) -> bool:
        """Whether one selector names this module: its kind, or a glob over its processor name
        (with or without ``.processor``)."""
        if selector in LAYER_KINDS:
            return kind == selector
        module = processor_name.removesuffix(".processor")
        return fnmatch.fnmatchcase(processor_name, selector) or fnmatch.fnmatchcase(module, selector)

    def keeps_factor(self, factor: int) -> bool:
        """Whether maps at this latent downsampling factor are accumulated."""
        if self.layers == "reference" and factor == 8:
            return False
        return self.factors is None or factor in self.factors

    def keeps_step(self, step: int) -> bool:
        """Whether denoising step ``step`` (0-based) is accumulated."""
        if self.step_range is None:
            return True
        start, stop = self.step_range
        return step >= start and (stop is None or step < stop)

    def keeps_module(self, processor_name: str, kind: str | None = None) -> bool:
        """Whether the text-attention module with this processor name (and kind: ``down``,
        ``mid``, ``up``, ``joint``, ``double``, ``single``, ``cross``) is traced."""
        if self.layers == "all":
            return True
        if self.layers == "reference":
            return not (kind == "mid" or processor_name.startswith("mid_block"))
        return any(self.selector_matches(s, processor_name, kind) for s in self.selectors)

    def traced_steps(self, steps: int) -> tuple[int, int]:
        """``(start, stop)`` of the steps accumulated in a run of ``steps`` steps (``ValueError``
        when the selection holds no step)."""
        if self.step_fractions is not None:
            start, stop = resolve_fractions(*self.step_fractions, steps)
        elif self.step_range is not None:
            start, stop = self.step_range[0], min(self.step_range[1] or steps, steps)
        else:
            start, stop = 0, steps
        if stop <= start:
            raise ValueError(f"the step range selects no step of {steps} (resolved to {start}:{stop})")
        return start, stop

    def step_bins(self, steps: int) -> list[tuple[int, int]]:
        """The ``per_timestep`` bins ``[(start, stop), …]`` of a run of ``steps`` steps (``[]``
        without per-timestep maps)."""
        return [] if self.per_timestep is None else step_bins(*self.traced_steps(steps), self.per_timestep)

    def for_steps(self, steps: int) -> "TraceConfig":
        """This selection for a run of ``steps`` steps: fractions resolved into ``step_range``,
        the range and the time bins checked (``ValueError`` if empty or too fine)."""
        config = self
        if self.step_fractions is not None:
            resolved = self.traced_steps(steps)
            if self.step_range is not None and tuple(self.step_range) != resolved:
                raise ValueError(f"step_range {self.step_range} is not step_fractions {self.step_fractions} of {steps} steps")
            config = replace(self, step_range=resolved)
        config.step_bins(steps)
        return config

    def to_dict(self) -> dict:
        """JSON-ready form recorded in run metadata."""
        return asdict(self)


@dataclass(frozen=True)
class GenerationConfig:
    """Diffusion settings shared by every prompt of a run."""

    steps: int = 20
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    images_per_prompt: int = 1
    negative_prompt: str | None = None
    trace: TraceConfig = field(default_factory=TraceConfig)
    concepts: ConceptConfig | None = None  # ConceptAttention maps beside the DAAM maps (joint models)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.trace.step_fractions is not None or self.trace.per_timestep is not None:
            object.__setattr__(self, "trace", self.trace.for_steps(self.steps))
        if self.images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {self.images_per_prompt}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise ValueError(f"{name} must be a positive multiple of 8, got {value}")

    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance is on (the UNet batch is [uncond; cond])."""
        return self.guidance_scale > 1.0


# Dataset Diffusion's label recipe (Nguyen et al., NeurIPS 2023, and its released code): self-attention
# at 32x32 (latent factor 2 at 512 px) raised to the power 4, foreground threshold 0.6, [0.5, 0.6) ignored.
REFINE_FACTOR = 2
REFINE_POWER = 4
LABEL_THRESHOLD = 0.6
IGNORE_LOW = 0.5


@dataclass(frozen=True)
class SegmentationConfig:
    """How class label maps are made from a traced generation (``--classes``).

    Attributes:
        vocabulary: the classes (a ``classes.ClassVocabulary``; label 0 is background).
        refine: refine each class map with self-attention (``A^power · M``).
        refine_factor: latent downsampling factor of the self-attention (``attn1``) layers whose
            affinity is captured (2: the 32x32 layers of SD 1.x/2.x at 512 px).
        power: the exponent τ of the affinity (Dataset Diffusion: 4).
        threshold: a pixel is its best class where that class's min-max score is ``>= threshold``.
        ignore_low: pixels whose best score is in ``[ignore_low, threshold)`` are 255 (ignored).
        append_class_prompt: generate from ``"prompt; name name"`` (the matched classes' names).
        label_maps: which maps the class maps come from: ``"daam"`` (the class words' DAAM token
            maps) or ``"concept"`` (the ConceptAttention maps of the class names, joint-attention
            models: the generation then computes concept maps, the class names among the concepts).
    """

    vocabulary: Any
    refine: bool = True
    refine_factor: int = REFINE_FACTOR
    power: int = REFINE_POWER
    threshold: float = LABEL_THRESHOLD
    ignore_low: float = IGNORE_LOW
    append_class_prompt: bool = False
    label_maps: LabelMaps = "daam"

    def __post_init__(self) -> None:
        if self.label_maps not in LABEL_MAP_KINDS:
            raise ValueError(f"label_maps must be one of {', '.join(LABEL_MAP_KINDS)}, got {self.label_maps!r}")
        if self.refine_factor < 1 or self.refine_factor & (self.refine_factor - 1):
            raise ValueError(f"refine_factor must be a power of two >= 1, got {self.refine_factor}")
        if self.power < 1:
            raise ValueError(f"power must be >= 1, got {self.power}")
        if not 0.0 <= self.ignore_low <= self.threshold <= 1.0:
            raise ValueError(
                f"need 0 <= ignore_low <= threshold <= 1, got ignore_low={self.ignore_low}, threshold={self.threshold}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (run.json): the class list and synonyms themselves, and the recipe."""
        recipe = {k: v for k, v in asdict(self).items() if k != "vocabulary"}
        return {
            "classes": list(self.vocabulary.names),
            "synonyms": {name: list(values) for name, values in self.vocabulary.synonyms.items()},
            **recipe,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentationConfig":
        """Inverse of ``to_dict``."""
        from .classes import ClassVocabulary

        values = dict(data)
        vocabulary = ClassVocabulary(tuple(values.pop("classes")), {k: tuple(v) for k, v in values.pop("synonyms").items()})
        return cls(vocabulary=vocabulary, **values)

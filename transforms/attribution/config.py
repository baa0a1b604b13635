"""Typed settings of the attribution tracer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LayerSelection = Literal["reference", "all"]
HeadAggregation = Literal["mean", "max"]
JointNormalization = Literal["all", "text"]
DEFAULT_THRESHOLD = 0.4  # τ of DAAM's word masks (the paper's best value)
DEFAULT_CMAP = "jet"  # the colour map of DAAM's plot_overlay


@dataclass(frozen=True)
class TraceConfig:
    """How cross-attention is captured and aggregated into per-token maps.

    Attributes:
        layers: ``"reference"`` reproduces DAAM 0.2.0: cross-attention of the UNet's down and up
            blocks only, maps at latent factor 8 dropped. ``"all"`` also captures the mid block
            and every factor (SDXL-style models have cross-attention there).
        factors: optional subset of latent downsampling factors to keep (e.g. ``(1, 2)``);
            applied on top of ``layers``.
        step_range: optional ``(start, stop)`` of denoising step indices to accumulate
            (``stop`` exclusive, ``None`` = to the end). DAAM sums over all steps.
        normalize: divide each row per pixel by the sum of the prompt-token rows (+1e-6), as
            DAAM's ``normalize=True``. Stored maps are raw by default.
        heads: ``"mean"`` (DAAM) or ``"max"`` over the heads of each traced call.
        joint_normalize: joint-attention models (SD3, Flux): ``"all"`` keeps the model's own
            softmax over every key (text and image); ``"text"`` renormalises over text keys.

    Example:
        >>> TraceConfig(factors=(1, 2), step_range=(0, 10))
        TraceConfig(layers='reference', factors=(1, 2), step_range=(0, 10), normalize=False)
    """

    layers: LayerSelection = "reference"
    factors: tuple[int, ...] | None = None
    step_range: tuple[int, int | None] | None = None
    normalize: bool = False
    heads: HeadAggregation = "mean"
    joint_normalize: JointNormalization = "all"

    def __post_init__(self) -> None:
        if self.heads not in ("mean", "max"):
            raise ValueError(f"heads must be 'mean' or 'max', got {self.heads!r}")
        if self.joint_normalize not in ("all", "text"):
            raise ValueError(f"joint_normalize must be 'all' or 'text', got {self.joint_normalize!r}")
        if self.layers not in ("reference", "all"):
            raise ValueError(f"layers must be 'reference' or 'all', got {self.layers!r}")
        if self.factors is not None:
            if not self.factors or any(f < 1 or f & (f - 1) for f in self.factors):
                raise ValueError(f"factors must be powers of two >= 1, got {self.factors!r}")
            object.__setattr__(self, "factors", tuple(sorted(set(self.factors))))
        if self.step_range is not None:
            start, stop = self.step_range
            if start < 0 or (stop is not None and stop <= start):
                raise ValueError(f"step_range must be (start >= 0, stop > start), got {self.step_range!r}")

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
        ``mid``, ``up``, ``joint``, ``double``, ``single``) is traced."""
        return self.layers == "all" or not (kind == "mid" or processor_name.startswith("mid_block"))

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

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
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
    """

    vocabulary: Any
    refine: bool = True
    refine_factor: int = REFINE_FACTOR
    power: int = REFINE_POWER
    threshold: float = LABEL_THRESHOLD
    ignore_low: float = IGNORE_LOW
    append_class_prompt: bool = False

    def __post_init__(self) -> None:
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

"""Typed settings of the attribution tracer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

LayerSelection = Literal["reference", "all"]
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

    Example:
        >>> TraceConfig(factors=(1, 2), step_range=(0, 10))
        TraceConfig(layers='reference', factors=(1, 2), step_range=(0, 10), normalize=False)
    """

    layers: LayerSelection = "reference"
    factors: tuple[int, ...] | None = None
    step_range: tuple[int, int | None] | None = None
    normalize: bool = False

    def __post_init__(self) -> None:
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

    def keeps_module(self, processor_name: str) -> bool:
        """Whether the cross-attention module with this processor name is traced."""
        return self.layers == "all" or not processor_name.startswith("mid_block")

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

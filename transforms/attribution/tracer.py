"""Install and remove the DAAM processors on a diffusers denoiser."""

from __future__ import annotations

from typing import Any

from .affinity import AffinityStore, DaamSelfAttnProcessor, require_self_attention
from .config import TraceConfig
from .processor import DaamCrossAttnProcessor
from .store import HeatMapStore


def _cross_attention_names(model: Any) -> set[str]:
    """Processor names (``…attn2.processor``) of the modules that attend to text."""
    names = set()
    for module_name, module in model.named_modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
            names.add(f"{module_name}.processor")
    return names


class CrossAttentionTracer:
    """Context manager that swaps DAAM processors onto the selected cross-attention modules.

    Self-attention and unselected modules keep their original (fused SDPA) processors; all
    originals come back on exit. Nothing on the pipeline is monkey-patched. With an ``affinity``
    store, the self-attention modules at its factor also get a ``DaamSelfAttnProcessor`` (their
    output still comes from the original processor); ``ValueError`` if the model has none there.

    Example:
        >>> store = HeatMapStore()
        >>> with CrossAttentionTracer(pipe.unet, store):  # doctest: +SKIP
        ...     store.begin(num_images=1, cfg=True, latent_size=(64, 64))
        ...     pipe("a cat", callback_on_step_end=...)
    """

    def __init__(self, denoiser: Any, store: HeatMapStore, affinity: AffinityStore | None = None) -> None:
        self.denoiser = denoiser
        self.store = store
        self.affinity = affinity
        self._originals: dict[str, Any] | None = None

    @property
    def traced_names(self) -> list[str]:
        """Processor names that are traced under the store's configuration."""
        config: TraceConfig = self.store.config
        return sorted(n for n in _cross_attention_names(self.denoiser) if config.keeps_module(n))

    def __enter__(self) -> "CrossAttentionTracer":
        originals = dict(self.denoiser.attn_processors)
        traced = set(self.traced_names)
        if not traced:
            raise ValueError(f"{type(self.denoiser).__name__} has no cross-attention module to trace")
        probed = set(require_self_attention(self.denoiser, self.affinity.factor)) if self.affinity else set()
        processors = {}
        for name, proc in originals.items():
            if name in traced:
                proc = DaamCrossAttnProcessor(self.store, name, proc)
            elif name in probed:
                proc = DaamSelfAttnProcessor(self.affinity, name, proc)  # type: ignore[arg-type]
            processors[name] = proc
        self.denoiser.set_attn_processor(processors)
        self._originals = originals
        return self

    def __exit__(self, *exc: object) -> None:
        if self._originals is not None:
            self.denoiser.set_attn_processor(self._originals)
            self._originals = None

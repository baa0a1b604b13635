"""Install and remove the DAAM processors on a diffusers denoiser."""

from __future__ import annotations

from typing import Any

import torch

from .affinity import AffinityStore, DaamSelfAttnProcessor, require_self_attention
from .architectures import Architecture, UNetArchitecture
from .concepts import ConceptRecorder
from .config import TraceConfig
from .store import HeatMapStore


class CrossAttentionTracer:
    """Context manager that swaps recording processors onto the selected text-attention modules.

    Which modules attend to text, and which processor records them, is the ``architecture``'s
    (default: a UNet's cross-attention). Self-attention and unselected modules keep their
    original (fused SDPA) processors; all originals come back on exit. Nothing on the pipeline is
    monkey-patched. With an ``affinity`` store, the self-attention modules at its factor also get a
    ``DaamSelfAttnProcessor`` (their output still comes from the original processor);
    ``ValueError`` if the model has none there. With a ``concepts`` recorder (ConceptAttention), the
    double-stream blocks its concept stream runs through get the architecture's processor too
    (``record`` off where DAAM does not trace them) and the recorder's hooks.

    Example:
        >>> store = HeatMapStore()
        >>> with CrossAttentionTracer(pipe.unet, store):  # doctest: +SKIP
        ...     store.begin(num_images=1, cfg=True, latent_size=(64, 64))
        ...     pipe("a cat", callback_on_step_end=...)
    """

    def __init__(
        self,
        denoiser: Any,
        store: HeatMapStore,
        affinity: AffinityStore | None = None,
        architecture: Architecture | None = None,
        concepts: ConceptRecorder | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.store = store
        self.affinity = affinity
        self.concepts = concepts
        self.architecture = architecture or UNetArchitecture()
        self._originals: dict[str, Any] | None = None
        self._call_hook: Any = None

    @property
    def modules(self) -> dict[str, str]:
        """Processor name → kind of every module that attends to text."""
        return self.architecture.traced_modules(self.denoiser)

    @property
    def traced_names(self) -> list[str]:
        """Processor names that are traced under the store's configuration."""
        config: TraceConfig = self.store.config
        return sorted(n for n, kind in self.modules.items() if config.keeps_module(n, kind))

    def __enter__(self) -> "CrossAttentionTracer":
        originals = attention_processors(self.denoiser)
        kinds = self.modules
        traced = set(self.traced_names)
        if not traced:
            raise ValueError(f"{type(self.denoiser).__name__} has no text-attention module to trace")
        probed = set(require_self_attention(self.denoiser, self.affinity.factor)) if self.affinity else set()
        conceptual = set(self.concepts.processor_names(self.denoiser)) if self.concepts else set()
        processors = {}
        for name, proc in originals.items():
            if name in traced or name in conceptual:
                proc = self.architecture.processor(name, kinds[name], self.store, proc)
                proc.record = name in traced
                proc.concepts = self.concepts if name in conceptual else None
            elif name in probed:
                proc = DaamSelfAttnProcessor(self.affinity, name, proc)  # type: ignore[arg-type]
            processors[name] = proc
        set_attention_processors(self.denoiser, processors)
        self._originals = originals
        self._call_hook = self.denoiser.register_forward_pre_hook(_counting(self.store))
        if self.concepts is not None:
            self.concepts.install(self.denoiser)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._call_hook is not None:
            self._call_hook.remove()
            self._call_hook = None
        if self.concepts is not None:
            self.concepts.remove()
        if self._originals is not None:
            set_attention_processors(self.denoiser, self._originals)
            self._originals = None


def attention_processors(denoiser: Any) -> dict[str, Any]:
    """Processor name → processor of every attention module: diffusers' ``attn_processors`` where
    the model has it, else (models without ``AttentionMixin``, e.g. Z-Image's) every module with a
    ``processor``, named ``<module>.processor`` as ``attn_processors`` names them."""
    if hasattr(denoiser, "attn_processors"):
        return dict(denoiser.attn_processors)
    return {f"{name}.processor": module.processor for name, module in denoiser.named_modules()
            if hasattr(module, "set_processor") and getattr(module, "processor", None) is not None}


def set_attention_processors(denoiser: Any, processors: dict[str, Any]) -> None:
    """Install ``processors`` (every name of ``attention_processors``) on ``denoiser``."""
    if hasattr(denoiser, "set_attn_processor"):
        denoiser.set_attn_processor(processors)
        return
    for name, module in denoiser.named_modules():
        if f"{name}.processor" in processors:
            module.set_processor(processors[f"{name}.processor"])


def _counting(store: HeatMapStore) -> Any:
    """A denoiser forward pre-hook that tells ``store`` a call starts (outside ``torch.compile``
    graphs, like the processors: the count is Python state)."""

    @torch.compiler.disable
    def hook(_module: Any, _args: Any) -> None:
        store.begin_call()

    return hook

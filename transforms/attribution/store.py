"""Accumulates cross-attention probabilities per image, layer and head across denoising steps."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import TraceConfig
from .steps import bin_of


def query_length(hidden_states: torch.Tensor) -> int:
    """Queries of an attention call: ``h*w`` of a ``(B, C, h, w)`` input, else its sequence length."""
    return hidden_states.shape[2] * hidden_states.shape[3] if hidden_states.ndim == 4 else hidden_states.shape[1]


def infer_factor(query_len: int, latent_h: int, latent_w: int) -> tuple[int, int, int]:
    """Find the downsampling factor ``f`` with ``ceil(h/f) * ceil(w/f) == query_len``.

    Returns ``(factor, h, w)`` of the layer's grid; raises if no power of two fits.
    """
    factor = 1
    while factor <= max(latent_h, latent_w):
        h, w = math.ceil(latent_h / factor), math.ceil(latent_w / factor)
        if h * w == query_len:
            return factor, h, w
        factor *= 2
    raise ValueError(
        f"cannot place {query_len} attention queries on a {latent_h}x{latent_w} latent grid"
    )


class HeatMapStore:
    """Per-layer sums over steps of conditional cross-attention maps, kept apart per image.

    ``begin`` starts a traced batch; processors call ``add`` (per-head probabilities, DAAM's
    layout) or ``add_reduced`` (heads already summed on the device: joint-attention models); the
    pipeline's step callback calls ``next_step``; ``global_maps`` aggregates per DAAM (bicubic to
    the map grid, clamp >= 0, mean over every layer-head map). ``latent_size`` is the grid of the
    finest maps: the latent for UNets, the patch grid for transformers.

    With ``config.per_timestep`` (``K`` time bins; ``begin`` then needs the run's ``steps``) each
    layer's sum gets a leading bin axis ``(K, …)``: a step adds into its bin only. The global maps
    aggregate the sum over bins; ``timestep_maps`` aggregates each bin alone, so bin ``k`` is what
    a run tracing only that bin's steps would store.

    ``begin(..., keys=slice)`` keeps only those text keys (every key by default): each key's map
    is aggregated on its own, so the kept keys' maps are exactly what the full store gives, at
    the cost of the prompts' tokens instead of the whole text window (77 CLIP keys, 333 in SD3).
    """

    def __init__(self, config: TraceConfig | None = None) -> None:
        self.config = config or TraceConfig()
        self.sums: dict[str, torch.Tensor] = {}
        self.factors: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.num_images = 0
        self.cfg = True
        self.conditional_first = False  # CFG batches [cond; uncond] (Z-Image) instead of [uncond; cond]
        self.latent_size = (0, 0)
        self.step = 0
        self.calls = 0  # denoiser calls begun in the current step (the tracer's hook counts them)
        self.bins: list[tuple[int, int]] = []
        self.keys = slice(None)

    def begin(
        self,
        num_images: int,
        cfg: bool,
        latent_size: tuple[int, int],
        steps: int | None = None,
        keys: slice | None = None,
        conditional_first: bool = False,
    ) -> None:
        """Reset for a new generation of ``num_images`` images (of ``steps`` denoising steps: needed
        for per-timestep bins), keeping the text keys ``keys`` (default: all; the maps' key axis
        then starts at ``keys.start``). ``conditional_first``: a CFG batch is ``[cond; uncond]``
        (Z-Image's), not ``[uncond; cond]``."""
        self.sums.clear()
        self.factors.clear()
        self.counts.clear()
        self.num_images = num_images
        self.cfg = cfg
        self.conditional_first = conditional_first
        self.latent_size = latent_size
        self.step = self.calls = 0
        self.keys = keys or slice(None)
        if self.config.per_timestep is not None and steps is None:
            raise ValueError("per-timestep maps need the number of steps: pass steps= to begin")
        self.bins = self.config.step_bins(steps) if steps is not None else []

    def next_step(self) -> None:
        """Advance to the next denoising step."""
        self.step += 1
        self.calls = 0

    def begin_call(self) -> None:
        """A denoiser call starts (the tracer's forward pre-hook)."""
        self.calls += 1

    def later_call(self) -> bool:
        """Whether the current denoiser call is not its step's first (not recorded: see ``wants``)."""
        return self.calls > 1

    def wants(self, query_len: int) -> bool:
        """Whether a call with this many queries, at the current step, is recorded. Only a step's
        first denoiser call is: pipelines that run guidance as two calls (Chroma, Flux's true CFG,
        Qwen-Image) make the conditional one first; later ones (the unconditional call, SD3's
        skip-layer pass) are not the prompt's attention."""
        if self.num_images == 0 or self.later_call() or not self.config.keeps_step(self.step):
            return False
        factor, _, _ = infer_factor(query_len, *self.latent_size)
        return self.config.keeps_factor(factor)

    def conditional_rows(self, name: str, batch: int) -> slice:
        """The rows of a call's ``batch`` that hold the conditional images (after CFG's
        unconditional half, or before it with ``conditional_first``): slice a call's inputs with
        it to compute maps for those images only, then ``add_reduced(..., conditional_only=True)``.
        ``RuntimeError`` for a batch of the wrong size."""
        first = self._conditional(name, batch)
        return slice(first, first + self.num_images)

    def _conditional(self, name: str, batch: int) -> int:
        """Index of the first conditional image in a call's batch (after CFG's unconditional half,
        or 0 with ``conditional_first``)."""
        n = self.num_images
        if self.cfg:
            if batch != 2 * n:
                raise RuntimeError(f"expected a CFG batch of {2 * n}, got {batch} in {name}")
            return 0 if self.conditional_first else n
        if batch != n:
            raise RuntimeError(f"expected a batch of {n}, got {batch} in {name}")
        return 0

    def _accumulate(self, name: str, maps: torch.Tensor, count: int) -> None:
        """Add ``(n, groups, queries, keys)`` to the layer's sum (its current bin's, with time
        bins); ``count`` heads per call."""
        if self.bins:
            self._accumulate_binned(name, maps, count)
        elif name in self.sums:
            self.sums[name] += maps
        else:
            self.sums[name] = maps.to(torch.float32, copy=True).contiguous()
            self._first(name, maps, count)

    def _first(self, name: str, maps: torch.Tensor, count: int) -> None:
        self.factors[name] = infer_factor(maps.shape[2], *self.latent_size)[0]
        self.counts[name] = count

    def _accumulate_binned(self, name: str, maps: torch.Tensor, count: int) -> None:
        """Add into bin ``bin_of(step)`` of a ``(K, n, groups, queries, keys)`` sum (steps after the
        last bin, e.g. a scheduler's extra step, count in the last)."""
        slot = bin_of(self.step, self.bins)
        slot = len(self.bins) - 1 if slot is None else slot
        if name not in self.sums:
            self.sums[name] = maps.new_zeros((len(self.bins), *maps.shape), dtype=torch.float32)
            self._first(name, maps, count)
        self.sums[name][slot] += maps

    def add(self, name: str, probs: torch.Tensor, heads: int) -> None:
        """Add one call's attention probabilities ``(batch*heads, h*w, keys)``, kept per head."""
        total, query_len, _ = probs.shape
        first = self._conditional(name, total // heads)
        # accumulate in the layout attention produces; the (keys, h, w) permute happens once at the end
        kept = probs[first * heads : (first + self.num_images) * heads, :, self.keys]
        self._accumulate(name, kept.reshape(self.num_images, heads, query_len, kept.shape[-1]), heads)

    def add_reduced(self, name: str, maps: torch.Tensor, count: int, conditional_only: bool = False) -> None:
        """Add one call's maps already reduced over heads on the device: ``(batch, h*w, keys)``,
        the sum of ``count`` heads' probabilities (or their maximum, with ``count`` 1).

        ``conditional_only``: ``maps`` holds the conditional images only, ``(num_images, h*w,
        keys)`` (the caller sliced its batch with ``conditional_rows`` before computing them)."""
        if conditional_only:
            if maps.shape[0] != self.num_images:
                raise RuntimeError(f"expected {self.num_images} conditional images, got {maps.shape[0]} in {name}")
            first = 0
        else:
            first = self._conditional(name, maps.shape[0])
        self._accumulate(name, maps[first : first + self.num_images, None, :, self.keys], count)

    def global_maps(self) -> torch.Tensor:
        """Per-image global maps ``(num_images, keys, H_lat, W_lat)`` of the kept keys, float32."""
        self._require_maps()
        return self._aggregate(lambda sums: sums.sum(0) if self.bins else sums)

    def timestep_maps(self) -> torch.Tensor:
        """Per-bin maps ``(K, num_images, keys, H_lat, W_lat)``: each bin aggregated alone, as
        ``global_maps`` does (``RuntimeError`` without time bins)."""
        self._require_maps()
        if not self.bins:
            raise RuntimeError("no time bins: set TraceConfig.per_timestep and pass steps to begin")
        return torch.stack([self._aggregate(lambda sums, b=b: sums[b]) for b in range(len(self.bins))])

    def subset_maps(self, names: Sequence[str] | None = None, bins: Sequence[int] | None = None) -> torch.Tensor:
        """Global maps ``(num_images, keys, H_lat, W_lat)`` of only the layers ``names`` (all by
        default) over only the time bins ``bins`` (all; needs time bins): what a run tracing just
        those layers and steps stores, from one run that traced them all (``evaluate``)."""
        self._require_maps()
        chosen = list(self.sums) if names is None else [n for n in self.sums if n in set(names)]
        if not chosen:
            raise ValueError(f"none of the layers {list(names or [])} recorded maps")
        if bins is not None and not self.bins:
            raise RuntimeError("no time bins: set TraceConfig.per_timestep and pass steps to begin")
        index = None if bins is None else torch.as_tensor(list(bins), dtype=torch.long)

        def select(sums: torch.Tensor) -> torch.Tensor:
            if not self.bins:
                return sums
            return (sums if index is None else sums[index.to(sums.device)]).sum(0)

        return self._aggregate(select, chosen)

    def _require_maps(self) -> None:
        if not self.sums:
            raise RuntimeError(
                "no cross-attention was recorded: check the trace selection (layers, factors, "
                "step_range) against the model and the number of steps"
            )

    def _aggregate(self, select: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
        """DAAM's aggregation of ``select(sum)`` of every layer (or of ``names``): bicubic to the
        map grid, clamp >= 0, mean over every layer-head map."""
        total: torch.Tensor | None = None
        count = 0
        for name in self.sums if names is None else names:
            maps = select(self.sums[name])
            n, groups, query_len, keys = maps.shape
            _, h, w = infer_factor(query_len, *self.latent_size)
            up = F.interpolate(
                maps.permute(0, 1, 3, 2).reshape(n * groups, keys, h, w),
                size=self.latent_size,
                mode="bicubic",
                align_corners=False,
            ).clamp_(min=0)
            up = up.reshape(n, groups, keys, *self.latent_size).sum(1)
            total = up if total is None else total + up
            count += self.counts[name]
        return total / count

    def layer_names(self) -> list[str]:
        """Names of the modules that recorded maps, in recording order."""
        return list(self.sums)

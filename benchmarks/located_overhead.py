"""The tracer's cost located where it is spent, so it can be resolved on a noisy machine.

A traced and an untraced call of the same prompts run the same denoiser code on the same shapes
everywhere except in the traced text-attention modules; before and after the denoiser they
differ by the tracer's set-up and the maps' aggregation. Forward hooks time the traced modules
and the whole denoiser in both calls, so

    located overhead = (traced − untraced seconds inside the traced modules)
                     + (traced − untraced seconds outside the denoiser)

and ``located_ratio`` = 1 + located overhead / untraced call seconds. The identical rest of the
denoiser, most of the time on real model sizes, drops out with its machine noise (on a shared CPU
a whole call drifts ±15 %, its attention modules by the same share of much less).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable

from benchmarks.common import synchronize, untraced_generate
from transforms.attribution import CrossAttentionTracer, GenerationConfig, HeatMapStore, generate_traced
from transforms.attribution.architectures import architecture_of


class ForwardClock:
    """While active, the seconds spent inside the forward of any of ``modules`` (outermost calls
    only: nested ones are not counted twice); CUDA is synchronised at each start and end."""

    def __init__(self, modules: Iterable[Any], device: str = "cpu") -> None:
        self.modules = list(modules)
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0
        self._start = 0.0
        self._handles: list[Any] = []

    def _before(self, *_: Any) -> None:
        if not self._depth:
            synchronize(self.device)
            self._start = time.perf_counter()
        self._depth += 1

    def _after(self, *_: Any) -> None:
        self._depth -= 1
        if not self._depth:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._start
            self.calls += 1

    def __enter__(self) -> "ForwardClock":
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._before))
            self._handles.append(module.register_forward_hook(self._after))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def traced_names(pipe: Any, config: GenerationConfig) -> list[str]:
    """The processor names ``generate_traced`` gives a recording processor under ``config``."""
    architecture = architecture_of(pipe)
    store = HeatMapStore(config.trace)
    return CrossAttentionTracer(architecture.denoiser(pipe), store, architecture=architecture).traced_names


def traced_modules(pipe: Any, config: GenerationConfig) -> list[Any]:
    """The denoiser's modules behind ``traced_names``."""
    denoiser = architecture_of(pipe).denoiser(pipe)
    return [denoiser.get_submodule(name.removesuffix(".processor")) for name in traced_names(pipe, config)]


def clocked(run: Callable[[], Any], denoiser: Any, attention: list[Any], device: str) -> dict[str, float]:
    """Seconds of one call of ``run``: in all, inside the denoiser, inside ``attention``."""
    with ForwardClock([denoiser], device) as inside, ForwardClock(attention, device) as attn:
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        total = time.perf_counter() - start
    return {"total": total, "denoiser": inside.seconds, "traced_modules": attn.seconds}


def located_overhead(
    pipe: Any, prompts: list[str], seeds: list[int], config: GenerationConfig, repeats: int, device: str = "cpu"
) -> dict[str, Any]:
    """``repeats`` traced/untraced pairs (after one warm-up pair), each timed in parts: per pair the
    located overhead's two parts (seconds) and its ratio; the median ratio."""
    denoiser = architecture_of(pipe).denoiser(pipe)
    attention = traced_modules(pipe, config)
    runs = {"traced": lambda: generate_traced(pipe, prompts, seeds, config),
            "untraced": lambda: untraced_generate(pipe, prompts, seeds, config)}
    pairs = []
    for index in range(repeats + 1):
        pair = {name: clocked(run, denoiser, attention, device) for name, run in runs.items()}
        if index:  # the first pair warms up
            pairs.append(pair)
    ratios, overheads = [], []
    for pair in pairs:
        traced, untraced = pair["traced"], pair["untraced"]
        inside = traced["traced_modules"] - untraced["traced_modules"]
        outside = (traced["total"] - traced["denoiser"]) - (untraced["total"] - untraced["denoiser"])
        overheads.append({"traced_modules_seconds": inside, "outside_denoiser_seconds": outside})
        ratios.append(1 + (inside + outside) / untraced["total"])
    share = [p["untraced"]["traced_modules"] / p["untraced"]["total"] for p in pairs]
    return {
        "located_ratio": statistics.median(ratios),
        "located_ratios": ratios,
        "traced_modules": len(attention),
        "traced_modules_share_of_untraced": statistics.median(share),
        "overheads": overheads,
        "pairs": pairs,
    }


def describe(located: dict[str, Any]) -> str:
    """One line: the median located ratio, each pair's, and the traced modules' share of a call."""
    pairs = ", ".join(f"{r:.4f}" for r in located["located_ratios"])
    return (f"located traced/untraced = {located['located_ratio']:.4f}x (pairs {pairs}; traced modules "
            f"{located['traced_modules_share_of_untraced']:.1%} of an untraced call)")

"""Which denoising steps are traced: ``--step-range`` fractions resolved to step indices, and the
contiguous time bins of ``--per-timestep``.

Steps are numbered ``0 … steps-1`` in sampling order (step 0 is the noisiest). A fraction ``f`` of
a run of ``N`` steps is the step boundary nearest to ``f·N`` (halves round up): ``START`` becomes
``⌊f_start·N + ½⌋`` and ``STOP`` (exclusive) ``⌊f_stop·N + ½⌋``, so ``0:1`` is every step and
``0.2:0.8`` of 20 steps is steps 4–15. Fractions are read from their shortest decimal form
(``0.35`` is 35/100, not the binary float below it), so the rounding is that of the text given.

``K`` time bins split the traced steps ``[start, stop)`` into ``K`` contiguous runs whose lengths
differ by at most one, the longer runs first (``numpy.array_split``'s rule): 10 steps in 4 bins
are 3, 3, 2, 2 steps.
"""

from __future__ import annotations

import math
from fractions import Fraction


def fraction_index(fraction: float, steps: int) -> int:
    """The step boundary nearest to ``fraction · steps`` (halves round up)."""
    return math.floor(Fraction(repr(float(fraction))) * steps + Fraction(1, 2))


def resolve_fractions(start: float, stop: float, steps: int) -> tuple[int, int]:
    """``(START, STOP)`` step indices of the fractions ``start:stop`` of ``steps`` steps (may be
    empty: ``START == STOP``; callers refuse that)."""
    return fraction_index(start, steps), fraction_index(stop, steps)


def step_bins(start: int, stop: int, bins: int) -> list[tuple[int, int]]:
    """``bins`` contiguous ``(start, stop)`` runs covering ``[start, stop)``, longer runs first
    (``ValueError`` if a bin would hold no step)."""
    total = stop - start
    if bins < 1 or total < bins:
        raise ValueError(f"cannot split {total} traced steps into {bins} time bins: each bin needs a step")
    size, extra = divmod(total, bins)
    edges = [start]
    for b in range(bins):
        edges.append(edges[-1] + size + (b < extra))
    return list(zip(edges[:-1], edges[1:]))


def bin_of(step: int, bins: list[tuple[int, int]]) -> int | None:
    """Index of the bin holding ``step`` (``None`` outside every bin)."""
    return next((b for b, (lo, hi) in enumerate(bins) if lo <= step < hi), None)

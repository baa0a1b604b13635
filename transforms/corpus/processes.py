"""Planning work spread over local processes (the driver's cores): how many, and a map over them."""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

MAX_AUTO_WORKERS = 8
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
"""How planning processes start: forked on Linux (nothing to import again), spawned elsewhere."""


def default_workers() -> int:
    """The planning processes to use when none are asked for: the cores this process may run on, up to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


def map_in_processes(function: Callable[..., Any], tasks: Sequence[tuple], workers: int) -> list[Any]:
    """``[function(*task) for task in tasks]``, run in up to ``workers`` child processes (started by
    ``START_METHOD``: ``function`` and the tasks pickle); results in task order, a child's exception
    raised here."""
    context = multiprocessing.get_context(START_METHOD)
    with context.Pool(max(1, min(workers, len(tasks))), initializer=gc.disable) as pool:
        return pool.starmap(function, tasks, chunksize=1)


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cycle collector off for a while: planning makes millions of short-lived records
    and no reference cycles, and each collection would walk every object the process holds (a
    driver with torch and Beam loaded: about a tenth of planning's time). Children of
    ``map_in_processes`` run with it off (forked, a collection would also copy the driver's pages)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()

"""What runs inside Dask processes: the worker setup plugin (log format, torch threads) and the
nanny of local clusters. Kept free of Beam and torch imports at module level (it imports only
``pipeline.logs`` and ``pipeline.dask.resources``), so that unpickling the plugin on a worker
configures logging before Beam's import-time chatter."""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

from distributed import Nanny
from distributed.comm import get_address_host
from distributed.diagnostics.plugin import WorkerPlugin

from ..logs import setup_logging
from .resources import available_cores, threads_per_worker

PLUGIN_NAME = "daam-datasets-worker-setup"
NANNY_CLOSE_TIMEOUT_S = 60.0
NANNY_ABORT_TIMEOUT_S = 3.0
# glibc's own steady state for large-tensor workloads: blocks under 32 MiB come from the heap
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def undo_malloc_trim() -> bool:
    """Undo the nanny's ``MALLOC_TRIM_THRESHOLD_=65536``.

    Dask nannies set it so that workers hand memory back to the OS; as a side effect glibc stops
    raising its mmap threshold, so every tensor over 128 KiB is a fresh ``mmap`` (page faults and
    zeroing on each allocation): generation with torch on CPU measured 1.4-1.6× slower. Setting
    the thresholds to glibc's own dynamic ceiling restores FnApiRunner speed. Returns whether it
    changed anything (only under a nanny, only on glibc).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False


class WorkerSetup(WorkerPlugin):
    """Runs on every worker when it joins: our log format and levels, torch threads, and glibc's
    default allocation behaviour (``undo_malloc_trim``).

    ``torch_threads`` fixed (local clusters) or ``None``: the worker's cores divided by the number of
    workers on its host (as counted when the run started; a host that joins later counts as one
    worker, which is how the SLURM recipe starts them). ``--torch-threads`` still wins: the model
    loader sets it after this.
    """

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, torch_threads: int | None, hosts: dict[str, int], log_level: int) -> None:
        self.torch_threads = torch_threads
        self.hosts = hosts
        self.log_level = log_level

    def setup(self, worker: Any) -> None:
        undo_malloc_trim()
        setup_logging(self.log_level <= logging.DEBUG)
        root = logging.getLogger()
        root.setLevel(self.log_level)
        label = worker.name if isinstance(worker.name, str) else worker.address
        formatter = logging.Formatter(
            f"%(asctime)s %(levelname)s [dask worker {label}] %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        for handler in root.handlers:
            handler.setFormatter(formatter)

        import torch

        host = get_address_host(worker.address)
        threads = self.torch_threads or threads_per_worker(available_cores(), self.hosts.get(host, 1))
        torch.set_num_threads(threads)
        logging.getLogger(__name__).debug("%d torch threads", threads)


class PatientNanny(Nanny):
    """A nanny that gives its worker time to exit: a worker that imported torch and Beam needs a few
    seconds of interpreter teardown, more than the default 4 s after which it is killed (with a
    warning) when the cluster closes. ``close_timeout`` is lowered when a run is interrupted."""

    close_timeout: float = NANNY_CLOSE_TIMEOUT_S

    async def close(self, timeout: float | None = None, reason: str = "nanny-close") -> str:  # type: ignore[override]
        return await super().close(timeout=timeout or self.close_timeout, reason=reason)

"""Resource rules of Dask workers: CPU cores, torch threads per worker, GPU pinning. Pure functions
without a Dask import (torch is imported only to count GPUs when ``CUDA_VISIBLE_DEVICES`` is unset)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

GPU = "gpu"  # ``--dask-workers gpu``: one worker per visible GPU


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask: cgroups, SLURM, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(cores: int, workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes share ``cores`` without oversubscribing."""
    return max(1, cores // max(1, workers))


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps a worker's OpenMP / MKL threads at ``threads``."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def visible_gpus(environ: Mapping[str, str] | None = None, device_count: int | None = None) -> list[str]:
    """The GPU ids a local cluster may hand out, one per worker.

    ``CUDA_VISIBLE_DEVICES`` wins when set (ids or UUIDs, in order; like CUDA, the list ends at the
    first negative id); otherwise ``0 … device_count-1`` (``torch.cuda.device_count()`` if not given).
    """
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        ids = []
        for item in (v.strip() for v in value.split(",")):
            if not item or item.startswith("-"):
                break
            ids.append(item)
        return ids
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    return [str(i) for i in range(device_count)]


def gpu_worker_envs(gpu_ids: Sequence[str], cores: int) -> list[dict[str, str]]:
    """Environment of each GPU worker: worker ``i`` sees only ``gpu_ids[i]`` (as ``cuda:0``) and gets
    an equal share of the CPU cores for its own threads."""
    threads = threads_per_worker(cores, len(gpu_ids))
    return [{"CUDA_VISIBLE_DEVICES": gpu, **thread_env(threads)} for gpu in gpu_ids]


def workers_per_host(hosts: Sequence[str]) -> dict[str, int]:
    """How many workers run on each host (from the scheduler's worker list)."""
    counts: dict[str, int] = {}
    for host in hosts:
        counts[host] = counts.get(host, 0) + 1
    return counts

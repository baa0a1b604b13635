"""Local Dask clusters for ``--dask-workers``: N single-threaded CPU workers, or one worker per
visible GPU, each pinned to its own device. The rules behind them (threads per worker, GPU ids,
worker environments) are in ``pipeline.dask.resources``."""

from __future__ import annotations

import logging
import socket
from typing import Any, Sequence

from distributed import LocalCluster, Scheduler, SpecCluster

from ..errors import DaskSetupError
from .resources import GPU, available_cores, gpu_worker_envs, thread_env, threads_per_worker, visible_gpus
from .worker import PatientNanny

logger = logging.getLogger(__name__)

DASHBOARD_PORT = 8787
LOCALHOST = "127.0.0.1"


def _dashboard_address() -> str | None:
    """``127.0.0.1:8787`` when free (else any free port); ``None`` without bokeh (no dashboard)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    with socket.socket() as sock:
        free = sock.connect_ex((LOCALHOST, DASHBOARD_PORT)) != 0
    return f"{LOCALHOST}:{DASHBOARD_PORT if free else 0}"


def _gpu_cluster(gpu_ids: Sequence[str], cores: int, common: dict[str, Any]) -> tuple[Any, str]:
    """One worker per GPU id (dask-cuda's ``LocalCUDACluster`` when installed, else
    ``gpu_spec_cluster``) and a description of it for the log."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    gpus = ",".join(gpu_ids)
    if LocalCUDACluster is not None:
        # dask-cuda sets each worker's CUDA_VISIBLE_DEVICES (its GPU first) and CPU affinity
        cluster = LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=gpus, threads_per_worker=1, worker_class=PatientNanny, host=LOCALHOST, **common
        )
        return cluster, f"{len(gpu_ids)} GPU workers (dask-cuda LocalCUDACluster, GPUs {gpus})"
    cluster = gpu_spec_cluster(gpu_ids, cores, **common)
    return cluster, f"{len(gpu_ids)} GPU workers (one per GPU {gpus} via CUDA_VISIBLE_DEVICES)"


def start_local_cluster(workers: int | str) -> tuple[Any, int]:
    """Start a local cluster on 127.0.0.1 and return it with the torch threads per worker.

    ``workers`` = N: a ``distributed.LocalCluster`` of N single-threaded worker processes.
    ``workers`` = ``gpu``: one worker per visible GPU, each seeing only its own device: dask-cuda's
    ``LocalCUDACluster`` when installed, else a ``SpecCluster`` whose nannies set each worker's
    ``CUDA_VISIBLE_DEVICES`` (see ``gpu_worker_envs``).
    """
    cores = available_cores()
    dashboard = _dashboard_address()
    common: dict[str, Any] = {"dashboard_address": dashboard, "silence_logs": logging.ERROR}
    if workers == GPU:
        gpu_ids = visible_gpus()
        if not gpu_ids:
            raise DaskSetupError("--dask-workers gpu: no GPU is visible (torch.cuda.device_count() is 0 or CUDA_VISIBLE_DEVICES is empty)")
        threads = threads_per_worker(cores, len(gpu_ids))
        cluster, kind = _gpu_cluster(gpu_ids, cores, common)
    else:
        threads = threads_per_worker(cores, int(workers))
        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            worker_class=PatientNanny,
            host=LOCALHOST,
            env=thread_env(threads),
            **common,
        )
        kind = f"{workers} worker processes × 1 thread"
    logger.info("Dask: started a local cluster of %s, %d torch threads each, scheduler %s", kind, threads, cluster.scheduler_address)
    if dashboard:
        logger.info("Dask dashboard: %s", cluster.dashboard_link)
    else:
        logger.info("Dask dashboard: not available (pip install bokeh)")
    return cluster, threads


def gpu_spec_cluster(gpu_ids: Sequence[str], cores: int, **scheduler_options: Any) -> Any:
    """One nanny-managed worker per GPU id, each with the environment of ``gpu_worker_envs``."""
    silence_logs = scheduler_options.pop("silence_logs", logging.ERROR)
    workers = {
        f"gpu-{gpu}": {"cls": PatientNanny, "options": {"nthreads": 1, "env": env, "host": LOCALHOST}}
        for gpu, env in zip(gpu_ids, gpu_worker_envs(gpu_ids, cores))
    }
    scheduler = {"cls": Scheduler, "options": {"host": LOCALHOST, **scheduler_options}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs, name="daam-datasets-gpu")

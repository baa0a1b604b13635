"""``--runner dask``: command-line options, local clusters (N CPU workers or one per GPU) and the
pure rules behind them (threads per worker, GPU pinning). Imports Dask only when it is used.

The runner itself (Beam's ``DaskRunner`` plus cluster lifetime and worker setup) is in
``pipeline.dask.runner``; this module has no Dask import at module level, so the CLI works
without the ``dask`` extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any, Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from ..errors import DaskSetupError, UsageError

logger = logging.getLogger(__name__)

RUNNER_PATH = "pipeline.dask.runner.DaamDaskRunner"
RUNNER_ALIASES = frozenset({"dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner", RUNNER_PATH.lower()})
GPU = "gpu"
DASHBOARD_PORT = 8787
INSTALL_HINT = "pip install 'daam-datasets[dask]'"


def parse_workers(value: str) -> int | str:
    """``--dask-workers``: a positive number of worker processes, or ``gpu`` (one per visible GPU)."""
    if value.strip().lower() == GPU:
        return GPU
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'gpu', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'gpu', got {value!r}")
    return number


class DaamDaskOptions(PipelineOptions):
    """Beam-level option of ``DaamDaskRunner``: start a local cluster for the run."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dask_workers",
            type=parse_workers,
            default=None,
            help="DaamDaskRunner: start a local Dask cluster of N single-threaded worker processes, "
            "or 'gpu' for one worker per visible GPU; closed when the run ends",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Our ``run`` options for Dask (Beam's own ``--dask_*`` options pass through too)."""
    group = parser.add_argument_group("Dask (--runner dask)")
    group.add_argument(
        "--dask-address",
        default=None,
        help="an existing Dask scheduler: tcp://HOST:PORT, or a scheduler file (JSON) written by "
        "'dask scheduler --scheduler-file' / dask-jobqueue",
    )
    group.add_argument(
        "--dask-workers",
        type=parse_workers,
        default=None,
        help="start a local Dask cluster for this run: N worker processes (one thread each), or "
        "'gpu' for one worker per visible GPU, each pinned to its own device",
    )


# --- pure rules -------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask: cgroups, SLURM, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(cores: int, workers: int) -> int:
    """Torch threads per worker so that ``workers`` processes share ``cores`` without oversubscribing."""
    return max(1, cores // max(1, workers))


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
    threads = str(threads_per_worker(cores, len(gpu_ids)))
    return [
        {"CUDA_VISIBLE_DEVICES": gpu, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        for gpu in gpu_ids
    ]


def workers_per_host(hosts: Sequence[str]) -> dict[str, int]:
    """How many workers run on each host (from the scheduler's worker list)."""
    counts: dict[str, int] = {}
    for host in hosts:
        counts[host] = counts.get(host, 0) + 1
    return counts


# --- command line → Beam options --------------------------------------------------------------


def _split_runner(extra: Sequence[str]) -> tuple[str | None, list[str]]:
    """The ``--runner`` value among Beam's pass-through arguments, and the other arguments."""
    runner, rest, i = None, [], 0
    while i < len(extra):
        arg = extra[i]
        if arg == "--runner" and i + 1 < len(extra):
            runner, i = extra[i + 1], i + 2
            continue
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return runner, rest


def require_dask() -> None:
    """Import Dask (and Beam's DaskRunner, which registers its ``--dask_*`` options) or explain."""
    try:
        import distributed  # noqa: F401

        import pipeline.dask.runner  # noqa: F401
    except ImportError as error:
        raise DaskSetupError(f"--runner dask needs Dask ({error.name} is not installed): {INSTALL_HINT}") from None


def address_flag(address: str) -> str:
    """Beam's flag for ``--dask-address``: a scheduler file when it names a file, else an address."""
    if os.path.isfile(address) or address.endswith(".json"):
        return f"--dask_scheduler_file={address}"
    return f"--dask_client_address={address}"


def beam_arguments(args: argparse.Namespace, extra: Sequence[str], device: str = "auto") -> list[str]:
    """Translate ``--runner dask`` / ``--dask-address`` / ``--dask-workers`` into Beam arguments for
    ``DaamDaskRunner``; other runners' arguments are returned unchanged."""

    address, workers = getattr(args, "dask_address", None), getattr(args, "dask_workers", None)
    runner, rest = _split_runner(extra)
    is_dask_runner = runner is not None and runner.lower() in RUNNER_ALIASES
    beam_dask_flags = [a for a in rest if a.startswith("--dask_")]
    if not (is_dask_runner or address or workers is not None or beam_dask_flags):
        return list(extra)
    if runner is not None and not is_dask_runner:
        raise UsageError(f"run: --dask-address/--dask-workers/--dask_* go with --runner dask, not --runner {runner}")
    if address and workers is not None:
        raise UsageError("run: give --dask-address (an existing scheduler) or --dask-workers (a local cluster), not both")
    given_beam_target = any(a.startswith(("--dask_client_address", "--dask_scheduler_file", "--dask_workers")) for a in rest)
    if not (address or workers is not None or given_beam_target):
        raise UsageError(
            "run: --runner dask needs --dask-address tcp://HOST:PORT (an existing scheduler) or "
            "--dask-workers N|gpu (a local cluster started for this run)"
        )
    if workers == GPU and device not in ("auto", "cuda", "cuda:0"):
        raise UsageError(
            f"run: --dask-workers gpu pins one GPU per worker (it is cuda:0 inside the worker); "
            f"use --device auto or cuda, not {device}"
        )
    try:
        require_dask()
    except DaskSetupError as error:
        raise UsageError(f"run: {error}") from None
    out = [f"--runner={RUNNER_PATH}", *rest]
    if address:
        out.append(address_flag(address))
    if workers is not None:
        out.append(f"--dask_workers={workers}")
    return out


# --- local clusters ---------------------------------------------------------------------------


def _dashboard_address() -> str | None:
    """``127.0.0.1:8787`` when free (else any free port); ``None`` without bokeh (no dashboard)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    with socket.socket() as sock:
        free = sock.connect_ex(("127.0.0.1", DASHBOARD_PORT)) != 0
    return f"127.0.0.1:{DASHBOARD_PORT if free else 0}"


def _thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def start_local_cluster(workers: int | str) -> tuple[Any, int]:
    """Start a local cluster on 127.0.0.1 and return it with the torch threads per worker.

    ``workers`` = N: a ``distributed.LocalCluster`` of N single-threaded worker processes.
    ``workers`` = ``gpu``: one worker per visible GPU, each seeing only its own device: dask-cuda's
    ``LocalCUDACluster`` when installed, else a ``SpecCluster`` whose nannies set each worker's
    ``CUDA_VISIBLE_DEVICES`` (see ``gpu_worker_envs``).
    """
    from distributed import LocalCluster

    from .worker import PatientNanny

    cores = available_cores()
    dashboard = _dashboard_address()
    common: dict[str, Any] = {"dashboard_address": dashboard, "silence_logs": logging.ERROR}
    if workers == GPU:
        gpu_ids = visible_gpus()
        if not gpu_ids:
            raise DaskSetupError("--dask-workers gpu: no GPU is visible (torch.cuda.device_count() is 0 or CUDA_VISIBLE_DEVICES is empty)")
        threads = threads_per_worker(cores, len(gpu_ids))
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None:
            # dask-cuda sets each worker's CUDA_VISIBLE_DEVICES (its GPU first) and CPU affinity
            cluster = LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=",".join(gpu_ids), threads_per_worker=1, worker_class=PatientNanny, host="127.0.0.1", **common
            )
            kind = f"{len(gpu_ids)} GPU workers (dask-cuda LocalCUDACluster, GPUs {','.join(gpu_ids)})"
        else:
            cluster = gpu_spec_cluster(gpu_ids, cores, **common)
            kind = f"{len(gpu_ids)} GPU workers (one per GPU {','.join(gpu_ids)} via CUDA_VISIBLE_DEVICES)"
    else:
        threads = threads_per_worker(cores, int(workers))
        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            worker_class=PatientNanny,
            host="127.0.0.1",
            env=_thread_env(threads),
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
    from distributed import Scheduler, SpecCluster

    from .worker import PatientNanny

    silence_logs = scheduler_options.pop("silence_logs", logging.ERROR)
    workers = {
        f"gpu-{gpu}": {"cls": PatientNanny, "options": {"nthreads": 1, "env": env, "host": "127.0.0.1"}}
        for gpu, env in zip(gpu_ids, gpu_worker_envs(gpu_ids, cores))
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", **scheduler_options}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs, name="daam-datasets-gpu")

"""Beam's ``DaskRunner`` for daam-datasets: one shard per Dask partition, worker setup (logging,
torch threads) on every worker, an optional local cluster for the run, and a clean shutdown.

Select it with ``daam-datasets run --runner dask`` (see ``pipeline.dask.options``) or, from Beam
directly, ``--runner=pipeline.dask.runner.DaamDaskRunner`` with ``--dask_client_address`` /
``--dask_scheduler_file`` / ``--dask_workers``.

Safety does not depend on Dask: a task whose worker died is rerun elsewhere, and the shard commit
protocol (data renamed into place, stats marker last; committed shards skipped) makes the rerun
write each prompt exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import dask.distributed as ddist
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.runner import PipelineState
from distributed.scheduler import KilledWorker

from ..errors import DaskSetupError, RunFailed
from .cluster import start_local_cluster
from .options import DaamDaskOptions
from .resources import available_cores, threads_per_worker, workers_per_host
from .worker import NANNY_ABORT_TIMEOUT_S, WorkerSetup

logger = logging.getLogger(__name__)
QUIET_LOGGERS = {"distributed": logging.WARNING, "tornado": logging.WARNING, "bokeh": logging.ERROR}
CONNECT_TIMEOUT_S = 30


def _client_kwargs(options: DaskOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"timeout": options.timeout if isinstance(options.timeout, int) else CONNECT_TIMEOUT_S}
    if options.scheduler_file:
        kwargs["scheduler_file"] = options.scheduler_file
    else:
        kwargs["address"] = options.address
    return kwargs


def prepare_workers(options: DaskOptions, torch_threads: int | None, local: bool) -> None:
    """Register ``WorkerSetup`` with the scheduler (it also runs on workers that join later) and log
    what the run will use."""
    kwargs = _client_kwargs(options)
    target = kwargs.get("scheduler_file") or kwargs.get("address")
    try:
        client = ddist.Client(**kwargs)
    except (OSError, TimeoutError, ValueError) as error:
        raise DaskSetupError(f"cannot reach the Dask scheduler at {target}: {error}") from None
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        hosts = workers_per_host([w["host"] for w in workers])
        client.register_plugin(WorkerSetup(torch_threads, hosts, logging.getLogger().getEffectiveLevel()))
        if not local:
            threads = torch_threads or ", ".join(
                f"{threads_per_worker(available_cores(), n)} on {h}" for h, n in hosts.items()
            ) or "cores // workers per host"
            logger.info(
                "Dask: scheduler %s, %d workers on %d hosts now (torch threads per worker: %s); dashboard %s",
                client.scheduler.address, len(workers), len(hosts), threads, client.dashboard_link,
            )
            if not workers:
                logger.info("Dask: no workers yet; shards start when workers join")
    finally:
        client.close()


@dataclasses.dataclass
class DaamDaskResult(DaskRunnerResult):
    """``DaskRunnerResult`` that closes its client (and the run's local cluster) when done."""

    cluster: Any = None

    def wait_until_finish(self, duration: float | None = None) -> str:
        try:
            state = super().wait_until_finish(duration)
        except KilledWorker as error:
            self.close(abort=True)
            raise RunFailed(
                f"Dask gave up on a shard after its workers died repeatedly ({error}); committed shards "
                "are kept: rerun the same command to finish the rest"
            ) from None
        except BaseException:  # a failed shard, Ctrl-C: stop the workers without waiting for them
            self.close(abort=True)
            raise
        if PipelineState.is_terminal(state):
            self.close()
        return state

    def cancel(self) -> str:
        try:
            return super().cancel()
        finally:
            self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        """Close the client, then the local cluster if this run started one (its workers are
        given time to exit cleanly, or stopped at once when ``abort``)."""
        try:
            self.client.close()
        finally:
            cluster, self.cluster = self.cluster, None
            if cluster is not None:
                if abort:
                    for nanny in getattr(cluster, "workers", {}).values():
                        nanny.close_timeout = NANNY_ABORT_TIMEOUT_S
                cluster.close()


class DaamDaskRunner(DaskRunner):
    """Beam's ``DaskRunner`` with one shard per partition, worker setup and an optional local cluster."""

    def run_pipeline(self, pipeline: Any, options: Any) -> DaamDaskResult:
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            for name, level in QUIET_LOGGERS.items():  # a local cluster's scheduler and nannies run here
                logging.getLogger(name).setLevel(level)
        ours = options.view_as(DaamDaskOptions)
        dask = options.view_as(DaskOptions)
        if ours.dask_workers is not None and (dask.address or dask.scheduler_file):
            raise DaskSetupError("give --dask_workers (a local cluster) or a scheduler address/file, not both")
        if ours.dask_workers is None and not (dask.address or dask.scheduler_file):
            raise DaskSetupError(
                "DaamDaskRunner needs --dask-address tcp://HOST:PORT or --dask-workers N|gpu "
                "(Beam flags: --dask_client_address, --dask_scheduler_file, --dask_workers)"
            )
        if dask.npartitions is None and dask.partition_size is None:
            dask.partition_size = 1  # one shard per partition: shards spread over the workers
        cluster, torch_threads = None, None
        if ours.dask_workers is not None:
            cluster, torch_threads = start_local_cluster(ours.dask_workers)
            dask.address = cluster.scheduler_address
        try:
            prepare_workers(dask, torch_threads, local=cluster is not None)
            result = super().run_pipeline(pipeline, options)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        return DaamDaskResult(result.client, result.futures, cluster)

"""Run daam-datasets on a SLURM cluster: a Dask scheduler here, one Dask worker per single-GPU job.

Run it on a login node (or in a small CPU job) inside the project's virtualenv, which must also be
visible from the compute nodes (a shared filesystem):

    python examples/slurm/slurm_cluster.py --jobs 8 --partition gpu --account myproj \\
        --venv /shared/envs/daam --hf-home /shared/hf -- \\
        --prompts /shared/corpus.parquet --output /shared/datasets/run1 \\
        --model stabilityai/stable-diffusion-2-1-base --steps 50

Everything after ``--`` goes to ``daam-datasets run``. The script submits ``--jobs`` worker jobs
with ``sbatch`` (through dask-jobqueue), runs the pipeline on them with ``--runner dask``, and
cancels the jobs at the end. Jobs that start late join the run when they come up; a job that hits
its walltime or is pre-empted loses at most the shard it was writing (rerun to resume). See
``examples/slurm/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

logger = logging.getLogger("daam_datasets.slurm")


def make_cluster(
    venv: str,
    partition: str | None = None,
    account: str | None = None,
    gres: str = "gpu:1",
    cpus_per_job: int = 8,
    memory: str = "64GB",
    walltime: str = "04:00:00",
    hf_home: str | None = None,
    modules: Sequence[str] = (),
    interface: str | None = None,
    log_directory: str = "slurm-logs",
    **overrides: Any,
):
    """A ``dask_jobqueue.SLURMCluster`` whose jobs each run one single-threaded Dask worker with one
    GPU (``--gres=gpu:1``; ``gres="gpu:a100:1"`` picks a type), ``cpus_per_job`` cores and ``memory``.

    One worker runs one shard at a time with one model; SLURM's ``--gres`` sets the job's
    ``CUDA_VISIBLE_DEVICES``, so ``--device auto`` loads the model on the job's GPU. The worker
    uses all the job's cores for its own torch threads. ``overrides`` go to ``SLURMCluster``.
    """
    from dask_jobqueue import SLURMCluster

    prologue = [f"module load {m}" for m in modules]
    prologue += [
        f"source {venv}/bin/activate",
        f"export OMP_NUM_THREADS={cpus_per_job}",
        "export PYTHONUNBUFFERED=1",
    ]
    if hf_home:
        prologue.append(f"export HF_HOME={hf_home}")  # models downloaded once, shared by every job
    options: dict[str, Any] = dict(
        queue=partition,
        account=account,
        cores=1,  # Dask threads per worker: one shard at a time
        processes=1,  # one worker (one model) per job
        job_cpu=cpus_per_job,
        memory=memory,
        job_mem=memory.replace("GB", "G").replace("GiB", "G"),
        walltime=walltime,
        job_extra_directives=[f"--gres={gres}"],
        job_script_prologue=prologue,
        python=f"{venv}/bin/python",
        interface=interface,
        log_directory=log_directory,
        job_name="daam-worker",
        death_timeout=120,
    )
    options.update(overrides)
    return SLURMCluster(**options)


def run_arguments(scheduler_address: str, run_args: Sequence[str]) -> list[str]:
    """``daam-datasets`` arguments for a run on the cluster's scheduler."""
    return ["run", *run_args, "--runner", "dask", "--dask-address", scheduler_address]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, run_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description="daam-datasets on SLURM GPU jobs (dask-jobqueue)")
    parser.add_argument("--jobs", type=int, required=True, help="worker jobs to submit (one GPU each)")
    parser.add_argument("--venv", required=True, help="virtualenv with daam-datasets[dask], visible on the compute nodes")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--gres", default="gpu:1", help="GPU request per job (one worker uses one GPU), e.g. gpu:a100:1")
    parser.add_argument("--cpus-per-job", type=int, default=8)
    parser.add_argument("--memory", default="64GB")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--hf-home", default=None, help="shared Hugging Face cache for the jobs")
    parser.add_argument("--module", dest="modules", action="append", default=[], help="'module load' this first (repeatable)")
    parser.add_argument("--interface", default=None, help="network interface the jobs reach the scheduler on, e.g. ib0")
    parser.add_argument("--print-job-script", action="store_true", help="print the job script and exit")
    args = parser.parse_args(ours)
    if not run_args and not args.print_job_script:
        parser.error("give the daam-datasets run arguments after --")

    from pipeline.cli import main as cli_main
    from pipeline.logs import setup_logging

    setup_logging()
    cluster = make_cluster(
        args.venv, args.partition, args.account, args.gres, args.cpus_per_job, args.memory,
        args.walltime, args.hf_home, args.modules, args.interface,
    )
    try:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        logger.info("submitted %d SLURM jobs; scheduler %s, dashboard %s", args.jobs, cluster.scheduler_address, cluster.dashboard_link)
        return cli_main(run_arguments(cluster.scheduler_address, run_args))
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())

"""The SLURM recipe (examples/slurm): the dask-jobqueue job script it submits, rendered offline."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed: pip install 'daam-datasets[dask]'")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "slurm"


def _recipe():
    spec = importlib.util.spec_from_file_location("slurm_cluster", EXAMPLES / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_job_script_requests_one_gpu_and_the_resources(tmp_path):
    recipe = _recipe()
    cluster = recipe.make_cluster(
        "/shared/envs/daam", partition="gpu", account="proj42", cpus_per_job=8, memory="64GB",
        walltime="02:30:00", hf_home="/shared/hf", modules=["cuda/12.4"], log_directory=str(tmp_path / "logs"),
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    )
    try:
        script = cluster.job_script()
        address = cluster.scheduler_address
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("-p gpu", "-A proj42", "-n 1", "--cpus-per-task=8", "--mem=64G", "-t 02:30:00", "--gres=gpu:1"):
        assert f"#SBATCH {directive}" in lines, (directive, script)
    # the environment each job sets up, in order, before the worker starts
    prologue = ["module load cuda/12.4", "source /shared/envs/daam/bin/activate", "export HF_HOME=/shared/hf"]
    assert [line for line in lines if line in prologue] == prologue
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith("/shared/envs/daam/bin/python -m distributed.cli.dask_worker " + address)
    assert "--nthreads 1" in worker and "--nanny" in worker  # one shard at a time, restarted if it dies
    assert lines.index(worker) > max(lines.index(p) for p in prologue)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid shell


def test_run_arguments_point_the_cli_at_the_cluster():
    recipe = _recipe()
    assert recipe.run_arguments("tcp://10.0.0.1:8786", ["--prompts", "p.txt", "--output", "o"]) == [
        "run", "--prompts", "p.txt", "--output", "o", "--runner", "dask", "--dask-address", "tcp://10.0.0.1:8786",
    ]


@pytest.mark.slow
def test_multi_gpu_node_batch_script_is_valid_shell():
    script = (EXAMPLES / "multi_gpu_node.sbatch").read_text()
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "#SBATCH --gres=gpu:" in script and "--runner dask --dask-workers gpu" in script

"""``--runner dask``: the same dataset as FnApiRunner on a 2-worker local cluster, resume, a worker
killed with SIGKILL mid-run, GPU pinning of local GPU workers, and the rules behind them."""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.dask.resources import gpu_worker_envs, threads_per_worker, visible_gpus, workers_per_host
from tests.conftest import CORPUS_NAME, FAST_ARGS, PROMPTS

try:
    import distributed  # noqa: F401

    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="distributed is not installed: pip install 'daam-datasets[dask]'")

ROOT = Path(__file__).resolve().parents[2]
N_PROMPTS = 8
# float32 maps and one torch thread everywhere: the same bytes whatever the runner or worker.
RUN = FAST_ARGS + ["--shard-size", "2", "--map-dtype", "float32", "--torch-threads", "1"]
SHARDS = [f"train-{i:05d}-of-00004" for i in range(4)]


# --- pure rules -------------------------------------------------------------------------------


def test_threads_per_worker_never_oversubscribes():
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(2, 1) == 2
    assert threads_per_worker(16, 3) == 5
    assert threads_per_worker(2, 8) == 1  # more workers than cores: still one thread each
    assert workers_per_host(["a", "b", "a"]) == {"a": 2, "b": 1}


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpus({}, device_count=4) == ["0", "1", "2", "3"]
    assert visible_gpus({}, device_count=0) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,5"}, device_count=8) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at an invalid id


def test_each_gpu_worker_sees_only_its_own_gpu():
    envs = gpu_worker_envs(["0", "1", "2", "3"], cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2", "3"]
    assert all(e["OMP_NUM_THREADS"] == "4" for e in envs)
    envs = gpu_worker_envs(["5", "7"], cores=2)
    assert [(e["CUDA_VISIBLE_DEVICES"], e["OMP_NUM_THREADS"]) for e in envs] == [("5", "1"), ("7", "1")]


@needs_dask
def test_workers_undo_the_nannys_malloc_trim_setting(monkeypatch):
    from pipeline.dask.worker import undo_malloc_trim

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert undo_malloc_trim() is False  # no nanny setting: glibc's default is left alone
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert undo_malloc_trim() is (platform.libc_ver()[0] == "glibc")


def test_runner_dask_without_dask_says_how_to_install(run_cli, tmp_path, monkeypatch):
    for module in ("distributed", "apache_beam.runners.dask.dask_runner", "pipeline.dask.runner"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the dask extra were not installed
    (tmp_path / "p.txt").write_text("a cat\n")
    code, _, err = run_cli("run", "--prompts", tmp_path / "p.txt", "--output", tmp_path / "o", "--runner", "dask", "--dask-workers", "2")
    assert code == 2 and "pip install 'daam-datasets[dask]'" in err


@needs_dask
def test_runner_dask_arguments(run_cli, tmp_path):
    import argparse

    from pipeline.errors import UsageError
    from pipeline.dask.options import RUNNER_PATH, beam_arguments

    def ns(address=None, workers=None):
        return argparse.Namespace(dask_address=address, dask_workers=workers)

    assert beam_arguments(ns(), ["--direct_num_workers=2"]) == ["--direct_num_workers=2"]
    assert beam_arguments(ns(workers=2), ["--runner", "dask"]) == [f"--runner={RUNNER_PATH}", "--dask_workers=2"]
    assert beam_arguments(ns(address="tcp://h:8786"), []) == [f"--runner={RUNNER_PATH}", "--dask_client_address=tcp://h:8786"]
    assert beam_arguments(ns(address="/x/sched.json"), ["--runner=DaskRunner"])[-1] == "--dask_scheduler_file=/x/sched.json"
    assert beam_arguments(ns(workers="gpu"), [], device="cuda")[-1] == "--dask_workers=gpu"
    for args, extra, device, message in [
        (ns(), ["--runner", "dask"], "auto", "needs --dask-address"),
        (ns(address="tcp://h:1", workers=2), [], "auto", "not both"),
        (ns(workers=2), ["--runner=PortableRunner"], "auto", "go with --runner dask"),
        (ns(workers="gpu"), [], "cuda:1", "--device auto or cuda"),
    ]:
        with pytest.raises(UsageError, match=message):
            beam_arguments(args, extra, device)
    code, _, err = run_cli("run", "--prompts", tmp_path / "p.txt", "--output", tmp_path / "o", "--dask-workers", "0")
    assert code == 2 and "positive integer or 'gpu'" in err


@needs_dask
@pytest.mark.slow
def test_gpu_workers_are_pinned_one_device_each(monkeypatch):
    """``--dask-workers gpu`` without dask-cuda: real worker processes, each with its own device."""
    from distributed import Client

    from pipeline.dask.cluster import start_local_cluster
    from pipeline.errors import DaskSetupError

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # the fallback path, even where dask-cuda exists
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DaskSetupError, match="no GPU is visible"):
        start_local_cluster("gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    cluster, threads = start_local_cluster("gpu")
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"], os.environ["OMP_NUM_THREADS"]))
            names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    finally:
        cluster.close()
    assert sorted(device for device, _ in seen.values()) == ["3", "5"]
    assert {t for _, t in seen.values()} == {str(threads)}
    assert names == {"gpu-3", "gpu-5"}


@needs_dask
def test_workers_dying_repeatedly_fail_the_run_with_a_resume_hint(monkeypatch):
    """Dask's ``KilledWorker`` becomes ``RunFailed`` (rerun to resume), after closing the client."""
    from apache_beam.runners.dask.dask_runner import DaskRunnerResult
    from distributed.scheduler import KilledWorker

    from pipeline.dask.runner import DaamDaskResult
    from pipeline.errors import RunFailed

    class Client:
        closed = False

        def close(self) -> None:
            self.closed = True

    def killed(self, duration=None):
        raise KilledWorker("shard-3", types.SimpleNamespace(address="tcp://127.0.0.1:1"), 3)

    monkeypatch.setattr(DaskRunnerResult, "wait_until_finish", killed)
    client = Client()
    with pytest.raises(RunFailed, match="workers died repeatedly .*rerun the same command") as caught:
        DaamDaskResult(client, []).wait_until_finish()
    assert caught.value.exit_code == 1 and client.closed


# --- end to end -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _shard_ids(root: Path) -> dict[str, list[str]]:
    return {p.stem: pq.read_table(p, columns=["id"]).column("id").to_pylist() for p in sorted((root / "data").glob("*.parquet"))}


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith(".")
    }


def _committed_by_worker(log: str) -> dict[str, list[str]]:
    """Shards each Dask worker committed, from the worker log lines."""
    found = collections.defaultdict(list)
    for worker, shard in re.findall(r"\[dask worker (\S+)\] transforms\.shards\.dofn: (train-\d+-of-\d+) committed", log):
        found[worker].append(shard)
    return dict(found)


def _check_exactly_once(root: Path, corpus_ids: list[str]) -> None:
    from datasets import load_dataset

    from pipeline.validate import validate_output

    assert validate_output(str(root)) == []
    ids = load_dataset(str(root), split="train")["id"]
    assert collections.Counter(ids) == collections.Counter(corpus_ids)  # every prompt, exactly once


@pytest.fixture(scope="module")
def fnapi_run(built_output) -> Path:
    """The FnApiRunner's output of the corpus (read only)."""
    return built_output(PROMPTS[:N_PROMPTS], *RUN)


@pytest.fixture(scope="module")
def corpus(fnapi_run) -> Path:
    return fnapi_run.parent / CORPUS_NAME


@pytest.fixture(scope="module")
def dask_run(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("dask") / "out"
    proc = _cli("--prompts", corpus, "--output", out, *RUN, "--runner", "dask", "--dask-workers", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@needs_dask
@pytest.mark.slow
def test_two_local_workers_give_the_fnapirunner_dataset(fnapi_run, dask_run):
    out, proc = dask_run
    assert "8 rows written, 0 shards skipped" in proc.stdout
    # same ids, same shard membership, same maps: the Parquet files are byte for byte the same
    assert _shard_ids(out) == _shard_ids(fnapi_run) and sorted(_shard_ids(out)) == SHARDS
    for name in SHARDS:
        assert (out / "data" / f"{name}.parquet").read_bytes() == (fnapi_run / "data" / f"{name}.parquet").read_bytes(), name
    _check_exactly_once(out, [i for ids in _shard_ids(fnapi_run).values() for i in ids])
    # shards spread over both workers, one model per worker process
    by_worker = _committed_by_worker(proc.stderr)
    assert len(by_worker) == 2 and sorted(s for shards in by_worker.values() for s in shards) == SHARDS
    loads = re.findall(r"\[dask worker (\S+)\] transforms\.models\.loading: loaded tiny", proc.stderr)
    assert sorted(loads) == sorted(by_worker)
    # the cluster was announced and shut down quietly
    assert "started a local cluster of 2 worker processes" in proc.stderr
    assert "Dask dashboard:" in proc.stderr
    assert not re.search(r"Traceback|ERROR|still alive|Failed to reconnect", proc.stderr), proc.stderr[-3000:]


@needs_dask
@pytest.mark.slow
def test_rerun_on_dask_is_a_no_op(corpus, dask_run):
    out, _ = dask_run
    before = _files(out)
    proc = _cli("--prompts", corpus, "--output", out, *RUN, "--runner", "dask", "--dask-workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 shards skipped" in proc.stdout
    assert "started a local cluster" not in proc.stderr  # nothing to do: no cluster started
    assert _files(out) == before


class ExternalCluster:
    """``dask scheduler`` and two ``dask worker --no-nanny`` processes on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        dask_cli = str(Path(sys.executable).parent / "dask")
        self.scheduler_file = root / "scheduler.json"
        self.logs: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self._start("scheduler", [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(self.scheduler_file)])
        self._wait(lambda: self.scheduler_file.exists(), "scheduler file")
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for name in ("w0", "w1"):
            self._start(name, [dask_cli, "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
                               "--host", "127.0.0.1", "--no-dashboard"])
        from distributed import Client

        self.client = Client(self.address, timeout=60)
        self.client.wait_for_workers(2, timeout=120)
        self.pids = self.client.run(os.getpid)  # worker address -> pid
        self.names = {a: w["name"] for a, w in self.client.scheduler_info(n_workers=-1)["workers"].items()}

    def _start(self, name: str, cmd: list[str]) -> None:
        self.logs[name] = self.root / f"{name}.log"
        with open(self.logs[name], "wb") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)

    @staticmethod
    def _wait(condition, what: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not condition():
            if time.time() > deadline:
                raise TimeoutError(f"no {what} after {timeout}s")
            time.sleep(0.1)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def close(self) -> None:
        self.client.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    if not HAVE_DASK:
        pytest.skip("distributed is not installed: pip install 'daam-datasets[dask]'")
    cluster = ExternalCluster(tmp_path_factory.mktemp("dask-cluster"))
    yield cluster
    cluster.close()


@needs_dask
@pytest.mark.slow
def test_resume_on_a_running_scheduler_redoes_only_missing_shards(corpus, dask_run, external_cluster, tmp_path):
    out, _ = dask_run
    target = tmp_path / "out"
    subprocess.run(["cp", "-a", str(out), str(target)], check=True)
    past = time.time_ns() - 3600 * 10**9  # an hour ago: a rewritten data file gets a new mtime
    for path in (target / "data").rglob("*"):
        os.utime(path, ns=(past, past))
    before = _files(target)
    logs_before = {name: len(external_cluster.log(name)) for name in ("w0", "w1")}
    (target / "_stats" / f"{SHARDS[1]}.json").unlink()
    proc = _cli("--prompts", corpus, "--output", target, *RUN, "--runner", "dask", "--dask-address", external_cluster.address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 shards skipped" in proc.stdout
    after = _files(target)
    assert set(after) == set(before)
    for rel, (data, mtime) in after.items():
        if rel.startswith("data/"):
            assert data == before[rel][0] and (mtime != before[rel][1]) == (SHARDS[1] in rel), rel
    logs = "".join(external_cluster.log(name)[logs_before[name]:] for name in ("w0", "w1"))
    assert [s for shards in _committed_by_worker(logs).values() for s in shards] == [SHARDS[1]]


@needs_dask
@pytest.mark.slow
def test_worker_killed_mid_run_gives_every_prompt_exactly_once(corpus, fnapi_run, external_cluster, tmp_path):
    """SIGKILL a worker that is running a shard right after the first shard is committed: Dask
    reruns its task on the other worker and the commit protocol keeps every prompt exactly once."""
    cluster = external_cluster
    out = tmp_path / "out"
    # more steps than the other tests so that shards are still running when the first one commits
    args = [*RUN, "--steps", "8", "--runner", "dask", "--dask-address", cluster.address]
    logs_before = {name: len(cluster.log(name)) for name in ("w0", "w1")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--prompts", str(corpus), "--output", str(out), *args],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        stats = out / "_stats"
        cluster._wait(lambda: stats.exists() and any(stats.glob("*.json")) or driver.poll() is not None, "committed shard", 240)
        busy = {addr: keys for addr, keys in cluster.client.processing().items() if keys}
        committed_at_kill = len(list(stats.glob("*.json")))
        assert busy and committed_at_kill < len(SHARDS), "the run finished before a worker could be killed mid-shard"
        victim = sorted(busy)[0]
        os.kill(cluster.pids[victim], signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-4000:]
    assert "8 rows written" in stdout
    cluster.procs[cluster.names[victim]].wait(timeout=30)
    assert cluster.procs[cluster.names[victim]].returncode == -signal.SIGKILL
    _check_exactly_once(out, [i for ids in _shard_ids(fnapi_run).values() for i in ids])
    assert sorted(_shard_ids(out)) == SHARDS and _shard_ids(out) == _shard_ids(fnapi_run)
    # the victim died while busy, so the survivor ran what it had: each shard committed exactly once
    logs = "".join(cluster.log(name)[logs_before[name]:] for name in ("w0", "w1"))
    committed = _committed_by_worker(logs)
    assert sorted(s for shards in committed.values() for s in shards) == SHARDS
    assert len(committed.get(cluster.names[victim], [])) <= committed_at_kill < len(SHARDS)

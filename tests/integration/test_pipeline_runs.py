"""Shard pipeline guarantees: byte-identical reruns, resume, overwrite, refusal of mixed settings,
and the same maps whatever the runner or batch size."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from tests.conftest import CORPUS_NAME, FAST_ARGS, PROMPTS

RUN = FAST_ARGS + ["--shard-size", "3", "--format", "parquet,webdataset", "--map-dtype", "float32"]


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every data/marker file under root with its bytes and mtime (lock/temp excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".") and "/." not in rel:
            out[rel] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def _maps(root: Path) -> dict[str, np.ndarray]:
    return {row["id"]: np.asarray(row["token_maps"]) for row in load_dataset(str(root), split="train")}


@pytest.fixture(scope="module")
def first_run(built_output) -> Path:
    """A 7-prompt output with this module's arguments, which its tests rerun in place."""
    return built_output(PROMPTS[:7], *RUN)


@pytest.fixture(scope="module")
def corpus(first_run) -> Path:
    return first_run.parent / CORPUS_NAME


def test_identical_runs_are_byte_identical(first_run, corpus, tmp_path, run_cli):
    code, _, _ = run_cli("run", "--prompts", corpus, "--output", tmp_path / "again", *RUN)
    assert code == 0
    for folder in ("data", "wds"):
        names = sorted(p.name for p in (first_run / folder).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "again" / folder).iterdir())
        assert len(names) == 3
        for name in names:
            assert (first_run / folder / name).read_bytes() == (tmp_path / "again" / folder / name).read_bytes(), name


def test_a_corpus_planned_in_lanes_gives_the_same_dataset(first_run, corpus, tmp_path, run_cli, monkeypatch, caplog):
    """Planning on three processes (the corpus cut into lanes) writes what planning in one wrote."""
    import json

    import transforms.corpus.lanes as lanes_module

    monkeypatch.setattr(lanes_module, "MIN_LANE_BYTES", 40)
    with caplog.at_level("INFO", logger="transforms.corpus.lanes"):
        code, _, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "lanes", "--plan-workers", "3", *RUN)
    assert code == 0, err
    assert "reading in 3 lanes on 3 processes" in caplog.text
    run_info = [json.loads((root / "run.json").read_text()) for root in (first_run, tmp_path / "lanes")]
    assert run_info[0]["fingerprint"] == run_info[1]["fingerprint"]
    for folder in ("data", "wds"):
        names = sorted(p.name for p in (first_run / folder).iterdir())
        for name in names:
            assert (first_run / folder / name).read_bytes() == (tmp_path / "lanes" / folder / name).read_bytes(), name


def test_rerun_is_a_no_op(first_run, corpus, run_cli):
    before = _files(first_run)
    code, out, _ = run_cli("run", "--prompts", corpus, "--output", first_run, *RUN)
    assert code == 0 and "3 shards skipped" in out
    assert _files(first_run) == before


def _age(root: Path) -> None:
    """Set every file's mtime to 1 ns: any file written afterwards has another one (no sleep)."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(1, 1))


def test_deleted_marker_redoes_only_that_shard(first_run, corpus, run_cli):
    _age(first_run)
    before = _files(first_run)
    (first_run / "_stats" / "train-00001-of-00003.json").unlink()
    code, out, _ = run_cli("run", "--prompts", corpus, "--output", first_run, *RUN)
    assert code == 0 and "2 shards skipped" in out
    after = _files(first_run)
    assert set(after) == set(before)
    for rel, (data, mtime) in after.items():
        redone = "train-00001-of-00003" in rel
        if rel.startswith(("data/", "wds/")):
            assert data == before[rel][0], rel  # same bytes either way
        if not rel.startswith(("_stats/", "run.json")):
            assert (mtime != before[rel][1]) == redone, rel


def test_changed_settings_refused_then_overwrite(first_run, corpus, tmp_path, run_cli):
    target = tmp_path / "o"
    assert run_cli("run", "--prompts", corpus, "--output", target, *RUN)[0] == 0
    code, _, err = run_cli("run", "--prompts", corpus, "--output", target, *RUN, "--steps", "3")
    assert code == 2 and "holds a run with other settings" in err and "--overwrite" in err
    code, out, _ = run_cli("run", "--prompts", corpus, "--output", target, *RUN, "--steps", "3", "--overwrite")
    assert code == 0 and "0 shards skipped" in out
    assert not np.allclose(_maps(target)[next(iter(_maps(first_run)))], next(iter(_maps(first_run).values())))


def test_batch_size_does_not_change_results(first_run, corpus, tmp_path, run_cli):
    code, _, _ = run_cli("run", "--prompts", corpus, "--output", tmp_path / "b1", *RUN, "--batch-size", "1")
    assert code == 0
    expected, got = _maps(first_run), _maps(tmp_path / "b1")
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def job_service():
    """A real Beam portable job service (Python, no Java) on a free localhost port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize(
    "runner_args",
    [
        pytest.param(["--direct_num_workers=2", "--direct_running_mode=multi_processing"], id="multi-process"),
        pytest.param(["--runner=PortableRunner", "--environment_type=LOOPBACK"], id="portable"),
    ],
)
@pytest.mark.slow
def test_other_runners_give_the_same_maps(first_run, corpus, tmp_path, runner_args, request):
    args = list(runner_args)
    if "--runner=PortableRunner" in args:
        args.append(f"--job_endpoint={request.getfixturevalue('job_service')}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--prompts", str(corpus), "--output", str(tmp_path / "o"), *RUN, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, got = _maps(first_run), _maps(tmp_path / "o")
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-5)

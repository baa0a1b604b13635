"""Crash safety with real processes: ``daam-datasets run`` killed at each point of the shard commit
protocol (fault injection, ``os._exit``) and by a real ``SIGKILL`` at a random-ish moment, then
rerun with the same command: every prompt exactly once, nothing truncated, no temp file visible,
no committed shard redone. Two runs into one output: the second refuses; a killed run's lock
does not block."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import OutputError
from pipeline.lock import RunLock
from pipeline.validate import validate_output
from tests.conftest import FAST_ARGS, PROMPTS
from transforms.testing.faults import CRASH_EXIT_CODE
from transforms.shards.layout import OutputLayout
from transforms.corpus import read_corpus

CLI = str(Path(sys.executable).with_name("daam-datasets"))
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, faults: str = "", **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DAAM_DATASETS_FAULTS"}
    if faults:
        env["DAAM_DATASETS_FAULTS"] = faults
    return subprocess.Popen([CLI, *map(str, args)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def _run(*args, faults: str = "", timeout: float = 300) -> tuple[int, str, str]:
    proc = _cli(*args, faults=faults)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _committed(out: Path) -> set[str]:
    return {p.stem for p in (out / "_stats").glob("*.json")} if (out / "_stats").exists() else set()


def _assert_exactly_once(out: Path, corpus: Path) -> None:
    """The validator finds nothing, and load_dataset sees every prompt's id once."""
    from datasets import load_dataset

    assert validate_output(str(out)) == []
    expected = sorted(p.id for p in read_corpus(str(corpus)).prompts)
    ids = load_dataset(str(out), split="train")["id"]
    assert sorted(ids) == expected, "a prompt is missing or duplicated"
    stats_ids = [i for p in sorted((out / "_stats").glob("*.json")) for i in json.loads(p.read_text())["ids"]]
    assert sorted(stats_ids) == expected


def _assert_crashed_state_is_safe(out: Path) -> None:
    """After a crash: only 'not finished yet' problems, and load_dataset refuses the folder."""
    from datasets import load_dataset

    allowed = {"incomplete", "missing_shard", "card", "stray_file"}
    problems = validate_output(str(out))
    assert problems and {p.kind for p in problems} <= allowed, problems
    for p in problems:
        if p.kind == "stray_file":  # an uncommitted shard's data or a crashed writer's temp file
            assert p.file.startswith((".tmp/", "data/")) and p.shard not in _committed(out), p
    with pytest.raises(FileNotFoundError, match="No \\(supported\\) data files found"):
        load_dataset(str(out), split="train")  # the unfinished run's card points at no data


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS[:5]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_fault_injected_crashes_then_rerun(corpus, tmp_path):
    """Crash mid-batch, mid-write and between data rename and stats marker, one after the other
    in the same output (one shard committed each time), then finish: exactly once."""
    out = tmp_path / "out"
    args = ("run", "--prompts", corpus, "--output", out, *FAST_ARGS, "--shard-size", "1")
    done: set[str] = set()
    for point in ("batch", "mid_write", "after_data_rename"):
        code, _, err = _run(*args, faults=f"crash_at={point};crash_after_shards=1")
        assert code == CRASH_EXIT_CODE, err
        assert f"crashing at {point}" in err
        now = _committed(out)
        assert done < now and len(now - done) == 1, "exactly one shard committed before the crash"
        done = now
        _assert_crashed_state_is_safe(out)
        if point == "mid_write":
            assert list((out / ".tmp").glob("*.part")), "the crash left its temp file"
        if point == "after_data_rename":
            orphans = {p.stem for p in (out / "data").glob("*.parquet")} - done
            assert len(orphans) == 1, "data renamed into place, marker missing"
    code, stdout, err = _run(*args)
    assert code == 0, err
    assert f"{len(done)} shards skipped" in stdout, "a committed shard was redone"
    assert not (out / ".tmp").exists() and not (out / ".lock").exists()
    _assert_exactly_once(out, corpus)


@pytest.mark.slow
def test_sigkill_at_random_moments_and_concurrent_run(tmp_path):
    """A real SIGKILL of the whole process group: once during model load, once mid-run at a
    random moment; meanwhile a second run into the same output is refused."""
    rng = random.Random()
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS[:8]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ("run", "--prompts", corpus, "--output", out, *FAST_ARGS, "--shard-size", "1", "--batch-size", "1")
    lock = out / ".lock"

    # 1. killed while it holds the lock and loads the model (before any shard is committed)
    proc = _cli(*args)
    _wait_for(lambda: lock.exists() and lock.stat().st_size > 0, proc)
    time.sleep(rng.uniform(0.0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert lock.exists(), "the killed run left its lock file behind"

    # 2. slowed down (sleep before each batch); a second run meanwhile is refused; then the kill
    #    lands at a random moment of a shard (mostly before, sometimes during generation)
    proc = _cli(*args, faults="sleep_batch=4")
    _wait_for(lambda: len(_committed(out)) >= 1, proc)  # 7 more shards: >= 28 s of work left
    second = _run(*args)
    assert second[0] == 2 and "another run" in second[2] and "is writing here" in second[2], second
    assert "Traceback" not in second[2]
    assert proc.poll() is None, "the first run must still be running"
    time.sleep(rng.uniform(0.0, 3.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = _committed(out)
    assert 1 <= len(before) < 8
    _assert_crashed_state_is_safe(out)

    # 3. the same command finishes the job; the dead run's lock does not block it
    code, stdout, err = _run(*args)
    assert code == 0, err
    assert f"{len(before)} shards skipped" in stdout
    _assert_exactly_once(out, corpus)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("timed out")
        time.sleep(0.05)


HOLD_LOCK = """
import sys, time
from pipeline.lock import RunLock
from transforms.shards.layout import OutputLayout
RunLock(OutputLayout(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    layout = OutputLayout(str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"another run \([^)]*:{holder.pid}\) is writing here"):
            RunLock(layout).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(layout)
    lock.acquire()  # the kill -9'd holder's file is still there, but its lock died with it
    with pytest.raises(OutputError, match="another run .* is writing here"):
        RunLock(layout).acquire()  # exclusive within one process too
    lock.release()
    assert not (tmp_path / ".lock").exists()
    lock.heartbeat()  # a late heartbeat from the progress thread must not resurrect the file
    assert not (tmp_path / ".lock").exists()
    again = RunLock(layout)
    again.acquire()
    again.release()

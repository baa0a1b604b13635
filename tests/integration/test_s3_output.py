"""``--output s3://…`` and ``publish --to s3://…`` against a real S3 API server on localhost
(moto's server mode, started here: real HTTP, real s3fs/botocore clients, no mocked filesystem):
a run, its resume, a crash and rerun, validate, publish, and ``load_dataset`` of the bucket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_ARGS, PROMPTS
from transforms.testing.faults import CRASH_EXIT_CODE

pytest.importorskip("moto", reason="the s3 tests need moto[server] (the test extra)")
s3fs = pytest.importorskip("s3fs", reason="the s3 tests need s3fs (the test extra)")

CLI = str(Path(sys.executable).with_name("daam-datasets"))
ROOT = Path(__file__).resolve().parents[2]
BUCKET = "daam-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """An S3 API server (``python -m moto.server``) on a free localhost port, with one bucket;
    the AWS settings every client here and in subprocesses reads, set for the module."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start")
                time.sleep(0.2)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fs():
    return s3fs.S3FileSystem(skip_instance_cache=True)


def _cli(*args, faults: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DAAM_DATASETS_FAULTS"}
    if faults:
        env["DAAM_DATASETS_FAULTS"] = faults
    return subprocess.run([CLI, *map(str, args)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _ids(prefix: str) -> list[str]:
    from datasets import load_dataset

    files = sorted(f"s3://{p}" for p in _fs().glob(f"{prefix}/data/*.parquet"))
    return load_dataset("parquet", data_files=files, split="train", storage_options={"skip_instance_cache": True})["id"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS[:4]) + "\n", encoding="utf-8")
    return path


def test_run_resume_validate_and_load_from_a_bucket(s3_server, corpus, run_cli):
    from pipeline.validate import validate_output
    from transforms.corpus import read_corpus

    out = f"s3://{BUCKET}/run"
    code, stdout, err = run_cli("run", "--prompts", str(corpus), "--output", out, *FAST_ARGS, "--shard-size", "2")
    assert code == 0, err
    fs = _fs()
    assert fs.exists(f"{BUCKET}/run/README.md") and not fs.exists(f"{BUCKET}/run/.tmp")
    stats = sorted(fs.glob(f"{BUCKET}/run/_stats/*.json"))
    assert len(stats) == 2
    before = {p: fs.info(p)["LastModified"] for p in stats}
    assert validate_output(out) == []
    expected = sorted(p.id for p in read_corpus(str(corpus)).prompts)
    assert sorted(_ids(f"{BUCKET}/run")) == expected
    code, stdout, err = run_cli("run", "--prompts", str(corpus), "--output", out, *FAST_ARGS, "--shard-size", "2")
    assert code == 0, err
    assert "2 shards skipped" in stdout
    assert {p: _fs().info(p)["LastModified"] for p in stats} == before, "a committed shard was rewritten"


@pytest.mark.slow
def test_a_crash_between_data_and_marker_then_rerun_gives_every_prompt_once(s3_server, corpus):
    from pipeline.validate import validate_output
    from transforms.corpus import read_corpus

    out = f"s3://{BUCKET}/crash"
    args = ("run", "--prompts", corpus, "--output", out, *FAST_ARGS, "--shard-size", "1")
    done = _cli(*args, faults="crash_at=after_data_rename;crash_after_shards=1")
    assert done.returncode == CRASH_EXIT_CODE, done.stderr
    fs = _fs()
    assert len(fs.glob(f"{BUCKET}/crash/_stats/*.json")) == 1
    assert len(fs.glob(f"{BUCKET}/crash/data/*.parquet")) == 2, "data in place, its marker missing"
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    assert "1 shards skipped" in done.stdout
    assert validate_output(out) == []
    assert sorted(_ids(f"{BUCKET}/crash")) == sorted(p.id for p in read_corpus(str(corpus)).prompts)


def test_publish_to_a_bucket_sends_the_dataset_files_once(s3_server, built_output, run_cli, tmp_path):
    source = built_output(PROMPTS[:3], *FAST_ARGS)
    target = f"s3://{BUCKET}/published"
    code, stdout, err = run_cli("publish", str(source), "--to", target)
    assert code == 0, err
    code, _, err = run_cli("publish", str(source), "--to", str(tmp_path / "local"))
    assert code == 0, err
    fs = _fs()
    sent = sorted(p[len(f"{BUCKET}/published/"):] for p in fs.find(f"{BUCKET}/published"))
    local = sorted(str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert sent == local and "README.md" in sent and any(p.startswith("data/") for p in sent)
    with fs.open(f"{BUCKET}/published/README.md", "rb") as fh:
        assert fh.read() == (Path(source) / "README.md").read_bytes()
    code, stdout, err = run_cli("publish", str(source), "--to", target)
    assert code == 0, err
    assert "0 files to" in stdout + err, stdout + err  # nothing sent again
    assert sorted(p[len(f"{BUCKET}/published/"):] for p in _fs().find(f"{BUCKET}/published")) == sent

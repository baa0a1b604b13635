"""``pipeline.dask.options`` and ``pipeline.dask.resources``: importable without Dask (the CLI
imports them on every run), and ``--runner dask`` translated without touching other arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.dask.options import RUNNER_PATH, beam_arguments, parse_workers

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
import pipeline.dask.options, pipeline.dask.resources
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed", "dask_cuda", "dask_jobqueue"))
print(",".join(loaded))
"""


@pytest.mark.slow
def test_options_and_resources_do_not_import_dask():
    """In a fresh interpreter: no module of ``dask`` or ``distributed`` after importing both."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "", f"imported: {proc.stdout.strip()}"


def test_dask_workers_value():
    assert parse_workers("3") == 3
    assert parse_workers(" GPU ") == "gpu"
    for value in ("0", "-2", "two", "", "1.5", "\u0661\u0662", "5000", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer or 'gpu'"):
            parse_workers(value)


def test_other_runners_arguments_are_returned_unchanged():
    ns = argparse.Namespace(dask_address=None, dask_workers=None)
    for extra in ([], ["--runner", "PortableRunner", "--job_endpoint", "x"], ["--runnerx", "dask"], ["--streaming"]):
        assert beam_arguments(ns, extra) == extra


def test_runner_dask_is_replaced_and_the_rest_kept_in_order():
    pytest.importorskip("distributed", reason="distributed is not installed: pip install 'daam-datasets[dask]'")
    ns = argparse.Namespace(dask_address=None, dask_workers=2)
    extra = ["--experiments", "a", "--runner", "DaskRunner", "--dask_partition_size", "3", "--", "z"]
    assert beam_arguments(ns, extra) == [
        f"--runner={RUNNER_PATH}", "--experiments", "a", "--dask_partition_size", "3", "--", "z", "--dask_workers=2",
    ]
    # every --runner goes, as Beam reads them (the last one wins, no abbreviations)
    assert beam_arguments(ns, ["--runner=DaskRunner", "--streaming", "--runner", "dask"]) == [
        f"--runner={RUNNER_PATH}", "--streaming", "--dask_workers=2",
    ]
    assert beam_arguments(ns, ["--runnerx", "1"]) == [f"--runner={RUNNER_PATH}", "--runnerx", "1", "--dask_workers=2"]

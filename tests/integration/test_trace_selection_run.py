"""``run`` with a trace selection (``--per-timestep``, fractions, layer kinds, ``--heads max``):
the ``timestep_maps`` column through ``load_dataset`` (Parquet) and WebDataset, ``run.json``'s
``trace`` record, the card, and the validator."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.validate import validate_output
from schemas.record import SCHEMA_VERSION
from tests.conftest import PROMPTS, copy_output

ARGS = ("--steps", "4", "--height", "64", "--width", "64", "--per-timestep", "2", "--step-range", "0.25:",
        "--layers", "up,mid", "--heads", "max", "--format", "parquet,webdataset", "--shard-size", "2")


@pytest.fixture(scope="module")
def out(built_output) -> Path:
    return built_output(PROMPTS[:3], *ARGS)


def test_timestep_maps_round_trip_through_load_dataset_and_webdataset(out):
    from datasets import List, load_dataset

    parquet = load_dataset(str(out), split="train")
    feature = parquet.features["timestep_maps"]
    assert isinstance(feature, List) and feature.length == 2 and feature.feature.dtype == "float16"
    tars = sorted(str(p) for p in (out / "wds").glob("*.tar"))
    wds = load_dataset("webdataset", data_files={"train": tars}, split="train")
    assert len(parquet) == len(wds) == 3
    raw = [np.load(io.BytesIO(data)) for path in tars for data in _members(path, ".timestep_maps.npy")]
    for row, sample, stored in zip(parquet.with_format("numpy"), wds, raw):
        bins = np.asarray(row["timestep_maps"])
        tokens = np.asarray(row["token_maps"])
        assert bins.shape == (2, *tokens.shape) and tokens.shape == (len(row["tokens"]), 8, 8)
        assert stored.dtype == np.float16 and stored.shape == bins.shape
        np.testing.assert_array_equal(stored.astype(np.float32), bins.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(sample["timestep_maps.npy"]), stored.astype(np.float64))
        assert np.isfinite(bins).all() and (bins >= 0).all() and not np.array_equal(bins[0], bins[1])


def _members(path: str, suffix: str) -> list[bytes]:
    """The bytes of a tar's members whose names end with ``suffix``, in file order."""
    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(suffix)]


def test_run_json_and_card_record_the_selection(out):
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    trace = info["trace"]
    assert info["schema_version"] == SCHEMA_VERSION
    assert (trace["architecture"], trace["layers"], trace["heads"], trace["joint_normalize"]) == ("unet", "up,mid", "max", "all")
    assert trace["modules"] == {"mid": 1, "up": 6} and len(trace["traced"]) == 7
    assert trace["step_range"] == {"given": "0.25:1.0", "resolved": [1, 4]}
    assert (trace["per_timestep"], trace["timestep_bins"]) == (2, [[1, 3], [3, 4]])
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| traced steps | `0.25:1.0` of 4 → steps 1–3 |" in card
    assert "| per-timestep maps | 2 bins of steps 1–2, 3 (column `timestep_maps`) |" in card
    assert "`timestep_maps` | `List(Array3D(shape=(None, 8, 8), dtype='float16'), length=2)`" in card
    assert "name: timestep_maps" in card  # the YAML features the Hub viewer casts rows to


def test_validate_passes_and_finds_a_missing_timestep_member(out, tmp_path):
    assert validate_output(str(out)) == []
    broken = copy_output(out, tmp_path / "out")
    tar_path = sorted((broken / "wds").glob("*.tar"))[0]
    members = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            members.append((member, tar.extractfile(member).read()))
    with tarfile.open(tar_path, "w") as tar:
        for member, data in members:
            if not (member.name.endswith("r000000.timestep_maps.npy")):
                tar.addfile(member, io.BytesIO(data))
    problems = [p for p in validate_output(str(broken)) if p.kind == "unreadable"]
    assert len(problems) == 1 and "lacks timestep_maps.npy" in problems[0].message

"""``validate_output`` / ``daam-datasets validate``: a sound output passes; each kind of damage is
found and named; ``--repair`` regenerates only what is damaged, byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.validate import Problem, damaged_shards, validate_output
from tests.conftest import FAST_ARGS, PROMPTS, copy_output

SHARD0, SHARD1 = "train-00000-of-00002", "train-00001-of-00002"
PARQUET0 = f"data/{SHARD0}.parquet"
PARQUET1 = f"data/{SHARD1}.parquet"


@pytest.fixture(scope="module")
def pristine(built_output) -> Path:
    """One sound output: 4 prompts in 2 shards, Parquet and WebDataset (built once, read only)."""
    return built_output(PROMPTS[:4], *FAST_ARGS, "--shard-size", "2", "--format", "parquet,webdataset")


@pytest.fixture
def out(pristine, tmp_path) -> Path:
    """A private copy of the sound output, to damage."""
    return copy_output(pristine, tmp_path / "out")


def _kinds(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.kind, p.file) for p in problems}


def _rewrite_parquet(out: Path, rel: str, change) -> None:
    """Apply ``change`` to a shard's table, rewrite it with the same schema and fix the stats
    marker's size and sha256, so that only the content checks can find the damage."""
    path = out / rel
    table = pq.read_table(path)
    table = change(table)
    pq.write_table(table, path)
    _restamp(out, rel, "parquet")


def _rewrite_tar(out: Path, rel: str, change) -> None:
    """Rebuild a WebDataset shard from ``change([(member name, bytes), …])`` and fix its stats entry."""
    with tarfile.open(out / rel) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in change(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (out / rel).write_bytes(buffer.getvalue())
    _restamp(out, rel, "webdataset")


def _restamp(out: Path, rel: str, fmt: str) -> None:
    """Set the stats marker's size and sha256 of ``rel`` to the file's current bytes."""
    data = (out / rel).read_bytes()
    stats_path = out / "_stats" / (Path(rel).stem + ".json")
    stats = json.loads(stats_path.read_text())
    stats["files"][fmt].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    stats_path.write_text(json.dumps(stats))


def _replace_column(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, type=table.schema.field(index).type))


def test_sound_output_has_no_problems(pristine, run_cli):
    assert validate_output(str(pristine)) == []
    code, stdout, _ = run_cli("validate", pristine)
    assert code == 0 and "OK" in stdout


def test_truncated_parquet(out, run_cli):
    data = (out / PARQUET0).read_bytes()
    (out / PARQUET0).write_bytes(data[: len(data) // 2])
    problems = validate_output(str(out))
    assert {("size", PARQUET0), ("checksum", PARQUET0), ("unreadable", PARQUET0)} <= _kinds(problems)
    assert damaged_shards(problems) == {SHARD0}
    code, _, stderr = run_cli("validate", out)
    assert code == 1 and "problems" in stderr and PARQUET0 in stderr and "[unreadable]" in stderr


def test_deleted_shard(out):
    (out / PARQUET1).unlink()
    assert ("missing_file", PARQUET1) in _kinds(validate_output(str(out)))


def test_deleted_marker_leaves_a_stray_data_file(out):
    (out / "_stats" / f"{SHARD1}.json").unlink()
    kinds = _kinds(validate_output(str(out)))
    assert ("missing_shard", f"_stats/{SHARD1}.json") in kinds
    assert ("stray_file", PARQUET1) in kinds and ("stray_file", f"wds/{SHARD1}.tar") in kinds


def test_duplicated_shard(out):
    copy = "data/train-00000-of-00002-copy.parquet"
    shutil.copy(out / PARQUET0, out / copy)
    problems = validate_output(str(out))
    kinds = _kinds(problems)
    assert ("stray_file", copy) in kinds and ("duplicate_id", copy) in kinds
    assert not damaged_shards(problems), "the committed shard is not to blame"
    assert all(p.kind in ("stray_file", "duplicate_id") for p in problems), problems


def test_duplicated_ids_between_committed_shards(out):
    ids = pq.read_table(out / PARQUET0).column("id").to_pylist()
    _rewrite_parquet(out, PARQUET1, lambda t: _replace_column(t, "id", ids))
    kinds = _kinds(validate_output(str(out)))
    assert ("duplicate_id", PARQUET1) in kinds and ("ids", PARQUET1) in kinds


def test_map_with_nan(out):
    def poison(table: pa.Table) -> pa.Table:
        maps = table.column("token_maps").to_pylist()
        maps[1][0][3][4] = float("nan")
        return _replace_column(table, "token_maps", maps)

    _rewrite_parquet(out, PARQUET0, poison)
    problems = validate_output(str(out))
    assert [(p.kind, p.file, "row 1" in p.message) for p in problems] == [("map_values", PARQUET0, True)]


def test_sample_decodes_only_the_sampled_shards_and_still_checks_ids_everywhere(out, run_cli):
    def poison(table: pa.Table) -> pa.Table:
        maps = table.column("token_maps").to_pylist()
        maps[0][0][1][1] = float("nan")
        return _replace_column(table, "token_maps", maps)

    _rewrite_parquet(out, PARQUET0, poison)
    sampled = {seed: validate_output(str(out), sample=1, seed=seed) for seed in range(8)}
    found = {seed for seed, problems in sampled.items() if ("map_values", PARQUET0) in _kinds(problems)}
    assert found and len(found) < 8, "some seeds sample shard 0, others shard 1"
    assert all(not problems for seed, problems in sampled.items() if seed not in found)
    assert ("map_values", PARQUET0) in _kinds(validate_output(str(out), sample=2))
    missed = min(set(range(8)) - found)
    ids = pq.read_table(out / PARQUET1).column("id").to_pylist()
    _rewrite_parquet(out, PARQUET0, lambda t: _replace_column(t, "id", ids))  # a shard outside the sample
    kinds = _kinds(validate_output(str(out), sample=1, seed=missed))
    assert ("duplicate_id", PARQUET0) in kinds or ("duplicate_id", PARQUET1) in kinds
    code, _, err = run_cli("validate", str(out), "--sample", "0")
    assert code == 2 and "--sample" in err and "Traceback" not in err


def test_negative_map_values_and_token_count(out):
    def damage(table: pa.Table) -> pa.Table:
        maps = table.column("token_maps").to_pylist()
        maps[0][0][0][0] = -1.0
        tokens = table.column("tokens").to_pylist()
        tokens[1] = tokens[1][:-1]
        return _replace_column(_replace_column(table, "token_maps", maps), "tokens", tokens)

    _rewrite_parquet(out, PARQUET1, damage)
    messages = {(p.kind, p.message.split(":")[0]) for p in validate_output(str(out))}
    assert ("map_values", "row 0") in messages and ("tokens", "row 1") in messages


def test_wrong_image_size_and_undecodable_image(out):
    from PIL import Image

    small = io.BytesIO()
    Image.new("RGB", (32, 32)).save(small, format="PNG")

    def damage(table: pa.Table) -> pa.Table:
        images = table.column("image").to_pylist()
        images[0]["bytes"] = small.getvalue()
        images[1]["bytes"] = images[1]["bytes"][:40]
        return _replace_column(table, "image", images)

    _rewrite_parquet(out, PARQUET0, damage)
    problems = [p for p in validate_output(str(out)) if p.kind == "image"]
    assert len(problems) == 2
    assert "32x32" in problems[0].message and "64x64" in problems[0].message
    assert "does not decode" in problems[1].message


def test_schema_that_differs_from_run_json(out):
    table = pq.read_table(out / PARQUET0)
    table = table.replace_schema_metadata({})  # no HF features: image would load as a raw struct
    pq.write_table(table, out / PARQUET0)
    assert "schema" in {p.kind for p in validate_output(str(out))}


def test_mismatched_card(out):
    card = out / "README.md"
    text = card.read_text(encoding="utf-8")
    assert "dtype: float16" in text
    card.write_text(text.replace("dtype: float16", "dtype: float32", 1), encoding="utf-8")
    problems = validate_output(str(out))
    assert [(p.kind, p.file) for p in problems] == [("card", "README.md")]
    assert "float32" in problems[0].message


def test_card_with_wrong_row_count(out):
    card = out / "README.md"
    text = card.read_text(encoding="utf-8")
    card.write_text(text.replace("num_examples: 4", "num_examples: 5"), encoding="utf-8")
    assert [p.kind for p in validate_output(str(out))] == ["card"]


def test_stray_temp_files(out):
    (out / "data" / f"{SHARD1}.parquet.tmp").write_bytes(b"half")
    (out / ".tmp").mkdir(exist_ok=True)
    (out / ".tmp" / "x.parquet.0123.part").write_bytes(b"half")
    (out / "loader.py").write_text("print('no')\n")
    kinds = _kinds(validate_output(str(out)))
    assert {("stray_file", f"data/{SHARD1}.parquet.tmp"), ("stray_file", ".tmp/x.parquet.0123.part"),
            ("stray_file", "loader.py")} <= kinds


def test_truncated_webdataset(out):
    tar = out / "wds" / f"{SHARD0}.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 3])
    kinds = {k for k, f in _kinds(validate_output(str(out))) if f == f"wds/{SHARD0}.tar"}
    assert {"size", "checksum"} <= kinds and kinds & {"unreadable", "row_count"}


def test_webdataset_sample_with_a_duplicate_member(out):
    tar = f"wds/{SHARD0}.tar"
    _rewrite_tar(out, tar, lambda members: members[:1] + members)
    problems = [p for p in validate_output(str(out)) if p.file == tar]
    assert [p.kind for p in problems] == ["unreadable"]
    assert "not a readable tar file" in problems[0].message and "duplicate" in problems[0].message


def test_webdataset_sample_split_across_the_tar(out):
    tar = f"wds/{SHARD0}.tar"
    _rewrite_tar(out, tar, lambda members: members[1:] + members[:1])
    kinds = {k for k, f in _kinds(validate_output(str(out))) if f == tar}
    assert {"unreadable", "row_count", "ids"} <= kinds


def test_stats_marker_without_a_field(out):
    marker = out / "_stats" / f"{SHARD0}.json"
    stats = json.loads(marker.read_text())
    del stats["failed_ids"]
    marker.write_text(json.dumps(stats))
    problems = validate_output(str(out))
    stats_problems = [p for p in problems if p.kind == "stats"]
    assert [(p.shard, p.file) for p in stats_problems] == [(SHARD0, f"_stats/{SHARD0}.json")]
    assert "failed_ids" in stats_problems[0].message
    assert damaged_shards(problems) == {SHARD0}


def test_not_an_output(tmp_path):
    assert [p.kind for p in validate_output(str(tmp_path))] == ["run_json"]
    assert [p.kind for p in validate_output(str(tmp_path / "nothing"))] == ["run_json"]


def test_repair_regenerates_only_the_damaged_shard(out, pristine, run_cli):
    data = (out / PARQUET0).read_bytes()
    (out / PARQUET0).write_bytes(data[:100])
    (out / "data" / "train-00005-of-00009.parquet").write_bytes(data)
    untouched = (out / PARQUET1).stat().st_mtime_ns
    code, stdout, stderr = run_cli("validate", out, "--repair")
    assert code == 0, stderr
    assert "repaired, OK" in stdout
    assert validate_output(str(out)) == []
    for rel in (PARQUET0, PARQUET1, f"wds/{SHARD0}.tar"):
        assert (out / rel).read_bytes() == (pristine / rel).read_bytes(), rel
    assert (out / PARQUET1).stat().st_mtime_ns == untouched
    assert not (out / "data" / "train-00005-of-00009.parquet").exists()


def test_repair_without_the_corpus_is_a_clear_error(out, tmp_path, run_cli):
    run = json.loads((out / "run.json").read_text())
    run["settings"]["prompts"] = str(tmp_path / "moved.txt")
    (out / "run.json").write_text(json.dumps(run))
    (out / PARQUET1).unlink()
    code, _, stderr = run_cli("validate", out, "--repair")
    assert code == 2
    assert "repair failed" in stderr and "moved.txt" in stderr and "Traceback" not in stderr

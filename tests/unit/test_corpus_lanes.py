"""Pass 1 on several cores (``transforms.corpus.lanes``): a corpus cut into lanes read by child
processes gives exactly what one pass gives (prompts, ids, seeds, failures with their lines, blank
counts, refusals and their messages), for cut .txt/.jsonl files and globs of whole files; and the
manifests and digest written from it by several processes equal those written by one."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transforms.corpus.lanes as lanes_module
import transforms.corpus.records as records_module
from pipeline.output import write_manifests, write_scan_manifests
from transforms.corpus import CorpusError, scan_corpus
from transforms.corpus.lanes import Unit, plan_lanes
from transforms.shards.layout import OutputLayout
from transforms.shards.sharding import plan_shards


@pytest.fixture
def small_lanes(monkeypatch):
    """Lanes of a few hundred bytes, so small corpora are cut."""
    monkeypatch.setattr(lanes_module, "MIN_LANE_BYTES", 200)


def both(source: str, **kwargs) -> tuple[dict, dict]:
    """What one pass and four lanes read from ``source`` (or the error each raised)."""
    return read(source, workers=1, **kwargs), read(source, workers=4, **kwargs)


def read(source: str, workers: int, **kwargs) -> dict:
    try:
        with scan_corpus(source, run_seed=3, workers=workers, **kwargs) as scan:
            return {
                "records": list(scan.records()), "failures": scan.failures, "blank": scan.blank,
                "rows": scan.rows_read, "prompts": scan.num_prompts, "parts": len(scan.spills),
            }
    except CorpusError as error:
        return {"error": str(error)}


def prompt_lines(rng: random.Random, count: int) -> list[str]:
    words = ["a cat", "a dog", "a red fox", "two owls", "", "   ", "a bowl of ramen"]
    return [rng.choice(words) + (f" {rng.randrange(30)}" if rng.random() < 0.5 else "") for _ in range(count)]


def assert_same(sequential: dict, parallel: dict) -> None:
    assert "error" not in sequential, sequential
    assert parallel["parts"] > 1  # really read in lanes
    assert {k: v for k, v in parallel.items() if k != "parts"} == {k: v for k, v in sequential.items() if k != "parts"}


def test_a_cut_txt_file_with_repeats_blanks_crlf_bom_and_bad_bytes_reads_as_one_pass(tmp_path, small_lanes):
    rng = random.Random(1)
    lines = prompt_lines(rng, 400)
    lines[17] = "x" * 10  # replaced below by invalid UTF-8
    data = "\ufeff" + "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lines)
    raw = data.encode("utf-8").replace(b"x" * 10, b"\xff\xfe bad")
    path = tmp_path / "p.txt"
    path.write_bytes(raw)
    sequential, parallel = both(str(path))
    assert_same(sequential, parallel)
    assert sequential["blank"] and sequential["failures"][0].line > 1 and any("-" in r.id for r in sequential["records"])


def test_a_cut_jsonl_file_keeps_failure_lines_given_ids_and_seeds(tmp_path, small_lanes):
    rng = random.Random(2)
    rows = []
    for i in range(500):
        if i % 97 == 50:
            rows.append("{not json")
            continue
        row = {"prompt": rng.choice(["a cat", "a dog", "owls"])}
        if rng.random() < 0.2:
            row["id"] = f"given-{i}"
        if rng.random() < 0.3:
            row["seed"] = rng.randrange(5)
        rows.append(json.dumps(row))
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sequential, parallel = both(str(path))
    assert_same(sequential, parallel)
    assert [f.line for f in parallel["failures"]] == [i + 1 for i in range(500) if i % 97 == 50]


def test_a_glob_of_mixed_formats_is_read_in_lanes_of_whole_and_cut_files(tmp_path, small_lanes):
    rng = random.Random(3)
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "a.txt").write_bytes(("\n".join(prompt_lines(rng, 600)) + "\n").encode() + b"\xff bad\n")
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"prompt": p}) + "\n" for p in prompt_lines(rng, 120)))
    (folder / "c.csv").write_text("prompt\n" + "".join(f'"{p}"\n' for p in prompt_lines(rng, 120)), encoding="utf-8")
    pq.write_table(pa.table({"prompt": prompt_lines(rng, 90)}), folder / "d.parquet")
    (folder / "e.txt").write_bytes(b"a cat\n" * 200 + b"\xfe\n")
    (folder / "f.txt").write_bytes(b"")
    lanes = plan_lanes(str(folder / "*"), 4)
    assert any(unit.start > 0 for lane in lanes for unit in lane)  # a.txt is cut
    assert all(unit.whole for lane in lanes for unit in lane if not unit.path.endswith(".txt"))
    sequential, parallel = both(str(folder / "*"))
    assert_same(sequential, parallel)
    sources = {f.source for f in sequential["failures"]}
    assert {str(folder / "a.txt"), str(folder / "e.txt")} <= sources


@pytest.mark.parametrize("problem", ["repeated given id", "given id that is a content id", "too many failures", "too many rows"])
def test_refusals_and_their_messages_are_those_of_one_pass(tmp_path, small_lanes, monkeypatch, problem):
    rows = [json.dumps({"prompt": f"a cat {i % 50}"}) for i in range(600)]
    if problem == "repeated given id":
        rows[20] = json.dumps({"prompt": "x", "id": "twice"})
        rows[580] = json.dumps({"prompt": "y", "id": "twice"})
    elif problem == "given id that is a content id":
        with scan_corpus(str(write(tmp_path / "one.jsonl", [rows[3]])), workers=1) as one:
            content = next(one.records()).id
        rows[590] = json.dumps({"prompt": "z", "id": content})
    elif problem == "too many failures":
        monkeypatch.setattr(records_module, "MAX_READ_FAILURES", 5)
        for i in (100, 300, 400, 450, 500, 550):
            rows[i] = "[1, 2]"
    else:
        monkeypatch.setattr(records_module, "MAX_ROWS", 550)
    sequential, parallel = both(str(write(tmp_path / "p.jsonl", rows)))
    assert "error" in sequential and parallel == sequential


def write(path, rows: list[str]):
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_lanes_cut_after_line_feeds_and_cover_every_byte_once(tmp_path, small_lanes):
    path = tmp_path / "p.txt"
    text = "".join(f"prompt number {i}\n" for i in range(300))
    path.write_text(text, encoding="utf-8")
    lanes = plan_lanes(str(path), 4)
    assert lanes is not None and len(lanes) == 4
    data = path.read_bytes()
    pieces = []
    for (unit,) in lanes:
        assert unit.file == "" and (unit.start == 0 or data[unit.start - 1:unit.start] == b"\n")
        pieces.append(data[unit.start:unit.stop])
    assert b"".join(pieces) == data
    assert plan_lanes(str(path), 1) is None


def test_compressed_and_parquet_files_are_never_cut(tmp_path, small_lanes):
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        with gzip.open(tmp_path / name, "wt", encoding="utf-8") as fh:
            fh.write("".join(json.dumps({"prompt": f"p {i} {'x' * 40}"}) + "\n" for i in range(400)))
    lanes = plan_lanes(str(tmp_path / "*.gz"), 8)
    assert lanes == [[Unit(str(tmp_path / "a.jsonl.gz"), str(tmp_path / "a.jsonl.gz"))],
                     [Unit(str(tmp_path / "b.jsonl.gz"), str(tmp_path / "b.jsonl.gz"))]]


def test_a_small_corpus_or_a_limit_reads_in_one_pass(tmp_path):
    path = write(tmp_path / "p.txt", [f"a cat {i}" for i in range(100)])
    assert read(str(path), workers=4)["parts"] == 1
    with scan_corpus(str(path), workers=4, limit=10) as scan:
        assert len(scan.spills) == 1 and scan.num_prompts == 10


def test_manifests_and_digest_written_by_several_processes_equal_one(tmp_path, small_lanes):
    rng = random.Random(5)
    path = write(tmp_path / "p.txt", prompt_lines(rng, 700))
    with scan_corpus(str(path), run_seed=1, workers=3) as scan:
        assert len(scan.spills) == 3
        specs = plan_shards(scan.num_prompts, 37, None)
        pending = {s.name for s in specs[::2]}
        one = write_manifests(OutputLayout(str(tmp_path / "one")), scan.records(), specs, pending)
        many = write_scan_manifests(OutputLayout(str(tmp_path / "many")), scan, specs, pending, workers=3)
    assert one == many
    names = sorted(p.name for p in (tmp_path / "one" / "_manifest").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "many" / "_manifest").iterdir()) and len(names) == len(pending)
    for name in names:
        assert (tmp_path / "one" / "_manifest" / name).read_bytes() == (tmp_path / "many" / "_manifest" / name).read_bytes()


def test_spawned_processes_read_the_lanes_as_forked_ones(tmp_path, small_lanes, monkeypatch):
    """The start method of other systems (macOS, Windows): everything a lane needs pickles."""
    import transforms.corpus.processes as processes_module

    rng = random.Random(6)
    path = write(tmp_path / "p.txt", prompt_lines(rng, 200))
    forked = read(str(path), workers=2)
    monkeypatch.setattr(processes_module, "START_METHOD", "spawn")
    spawned = read(str(path), workers=2)
    assert forked["parts"] == 2 and spawned == forked
    with scan_corpus(str(path), workers=2) as scan:
        specs = plan_shards(scan.num_prompts, 50, None)
        pending = {s.name for s in specs}
        many = write_scan_manifests(OutputLayout(str(tmp_path / "many")), scan, specs, pending, workers=2)
        assert many == write_manifests(OutputLayout(str(tmp_path / "one")), scan.records(), specs, pending)

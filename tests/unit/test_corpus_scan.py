"""Planning in bounded memory (``transforms.corpus.scan``): the same ids, seeds and refusals as a
plain in-memory reference at any bucket count, globs of mixed (gzip) formats, ``hf:`` streaming,
and memory that does not grow with the corpus."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transforms.corpus.ids as ids_module
import transforms.corpus.spill as spill_module
from schemas.output_records import parse_shard_name, shard_name
from transforms.corpus import CorpusError, content_id, derive_seed, read_corpus, scan_corpus


def reference_ids(rows: list[dict]) -> list[str]:
    """Ids as the specification says, with a dict of everything: given ids kept, content ids
    suffixed -2, -3… per repeat in input order."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if "id" in row:
            out.append(row["id"])
            continue
        base = content_id(row["prompt"], row.get("seed"))
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("buckets,run", [(256, 1 << 17), (3, 5)])
def test_ids_and_seeds_match_the_reference_with_few_buckets_and_tiny_sort_runs(tmp_path, monkeypatch, buckets, run):
    monkeypatch.setattr(ids_module, "BUCKETS", buckets)
    monkeypatch.setattr(spill_module, "SORT_RUN", run)
    rng = random.Random(7)
    words = ["a cat", "a dog", "a red fox", "two owls"]
    rows = []
    for i in range(600):
        row = {"prompt": rng.choice(words)}
        if rng.random() < 0.2:
            row["id"] = f"given-{i}"
        if rng.random() < 0.3:
            row["seed"] = rng.randrange(3)
        rows.append(row)
    corpus = read_corpus(write_jsonl(tmp_path / "p.jsonl", rows), run_seed=5)
    expected = reference_ids(rows)
    assert [p.id for p in corpus.prompts] == expected
    assert len(set(expected)) == len(expected) and any(i.endswith("-7") for i in expected)  # repeats exercised
    assert [p.seed for p in corpus.prompts] == [r.get("seed", derive_seed(5, i)) for r, i in zip(rows, expected)]
    assert [p.index for p in corpus.prompts] == list(range(600))


@pytest.mark.parametrize("buckets", [256, 1])
def test_the_first_id_problem_in_input_order_is_the_one_reported(tmp_path, monkeypatch, buckets):
    monkeypatch.setattr(ids_module, "BUCKETS", buckets)
    clash = content_id("x", None) + "-2"
    rows = [{"prompt": "x"}, {"prompt": "y", "id": "k"}, {"prompt": "x"}, {"prompt": "z", "id": clash},
            {"prompt": "w", "id": "k"}]
    with pytest.raises(CorpusError, match=rf"id '{clash}' is given explicitly and also generated \(line 4\)"):
        read_corpus(write_jsonl(tmp_path / "p.jsonl", rows))
    with pytest.raises(CorpusError, match="duplicate id 'k' on lines 2 and 4"):
        read_corpus(write_jsonl(tmp_path / "q.jsonl", rows[:3] + rows[4:]))


def test_ids_that_only_look_generated_are_kept(tmp_path):
    base = content_id("x", None)
    rows = [{"prompt": "x"}, {"prompt": "x"}, {"prompt": "a", "id": base + "-02"}, {"prompt": "b", "id": base + "-1"}]
    assert [p.id for p in read_corpus(write_jsonl(tmp_path / "p.jsonl", rows)).prompts] == [base, base + "-2", base + "-02", base + "-1"]


def test_a_glob_of_mixed_and_gzipped_files_reads_in_path_order_and_failures_name_their_file(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    with gzip.open(folder / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"prompt": "one", "id": "1"}\nnot json\n')
    (folder / "b.txt").write_text("two\n\nthree\n", encoding="utf-8")
    (folder / "c.csv").write_text("prompt,id\nfour,4\n", encoding="utf-8")
    pq.write_table(pa.table({"prompt": ["five"]}), folder / "d.parquet")
    (folder / "notes").mkdir()  # folders the glob matches are not files: skipped
    corpus = read_corpus(str(folder / "*"))
    assert [p.prompt for p in corpus.prompts] == ["one", "two", "three", "four", "five"]
    assert corpus.blank == 1 and corpus.accounted
    [failure] = corpus.failures
    assert failure.source == str(folder / "a.jsonl.gz") and failure.line == 2 and "invalid JSON" in failure.reason


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "id": "same"}])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q"}, {"prompt": "r", "id": "same"}])
    with pytest.raises(CorpusError, match=r"duplicate id 'same' on line 1 of .*a\.jsonl and line 2 of .*b\.jsonl"):
        read_corpus(str(tmp_path / "*.jsonl"))


def test_glob_and_gzip_refusals_are_one_line(tmp_path):
    with pytest.raises(CorpusError, match="no file matches this pattern"):
        read_corpus(str(tmp_path / "*.jsonl"))
    (tmp_path / "p.txt.gz").write_bytes(gzip.compress(b"a\nb\n")[:-6])  # truncated
    with pytest.raises(CorpusError, match="not a readable gzip file"):
        read_corpus(str(tmp_path / "p.txt.gz"))
    (tmp_path / "p.parquet.gz").write_bytes(b"x")
    with pytest.raises(CorpusError, match=r"unknown format '\.parquet\.gz'"):
        read_corpus(str(tmp_path / "p.parquet.gz"))


def test_hf_sources_stream_a_data_folder(tmp_path):
    data = tmp_path / "repo" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"prompt": ["a", "b", ""], "id": ["1", "2", None], "other": [1, 2, 3]}), data / "train-0.parquet")
    corpus = read_corpus(f"hf:{tmp_path / 'repo'}")
    assert [(p.id, p.prompt) for p in corpus.prompts] == [("1", "a"), ("2", "b")] and corpus.blank == 1
    with pytest.raises(CorpusError, match="missing column 'caption'"):
        read_corpus(f"hf:{tmp_path / 'repo'}", columns=__import__("transforms.corpus", fromlist=["ColumnNames"]).ColumnNames(prompt="caption"))


def test_scan_memory_does_not_grow_with_the_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(spill_module, "BUCKETS_HELD", 2048)  # the id buckets are written every 2k ids, not 65k

    def peak(lines: int) -> int:
        path = tmp_path / f"p{lines}.txt"
        path.write_text("".join(f"prompt number {i} of a long corpus\n" for i in range(lines)), encoding="utf-8")
        tracemalloc.start()
        with scan_corpus(str(path)) as scan:
            count = sum(1 for _ in scan.records())
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == lines
        return top

    small, large = peak(10_000), peak(100_000)
    assert large < small * 1.5 + 2_000_000, (small, large)  # ten times the prompts, about the same memory


def test_the_spill_is_removed_when_the_scan_closes_or_fails(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    with scan_corpus(path, workdir=str(tmp_path)) as scan:
        folder = scan.folder
        assert folder.exists() and folder.parent == tmp_path
    assert not folder.exists()
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}])
    with pytest.raises(CorpusError):
        scan_corpus(str(tmp_path / "d.jsonl"), workdir=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("daam-corpus-")] == []


def test_shard_names_stay_sortable_beyond_99999_shards():
    assert shard_name(3, 16) == "train-00003-of-00016"
    names = [shard_name(i, 123_456) for i in (9, 99_999, 100_000)]
    assert names == sorted(names) and names[0] == "train-000009-of-123456"
    assert parse_shard_name(names[2]) == (100_000, 123_456)


@pytest.mark.parametrize("rows,category", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (999_999, "100K<n<1M"),
                                           (10_000_000, "10M<n<100M"), (600_000_000, "100M<n<1B"),
                                           (10**11, "100B<n<1T"), (10**12, "n>1T")])
def test_card_size_category_names_every_hub_bucket(rows, category):
    from pipeline.card import size_category

    assert size_category(rows) == category

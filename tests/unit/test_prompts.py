"""Prompt corpora: every input format, stable ids and seeds, duplicates, limits."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.prompts import ColumnNames, CorpusError, derive_seed, read_corpus


def _expect(corpus, prompts):
    assert [p.prompt for p in corpus.prompts] == prompts
    assert [p.index for p in corpus.prompts] == list(range(len(prompts)))


def test_txt_crlf_blank_and_repeated_prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"a cat\r\n\r\na dog\r\na cat\r\n")
    corpus = read_corpus(str(path), run_seed=3)
    _expect(corpus, ["a cat", "a dog", "a cat"])
    assert corpus.blank == 1
    first, _, repeat = corpus.prompts
    assert repeat.id == f"{first.id}-2" and repeat.seed != first.seed
    assert first.seed == derive_seed(3, first.id)
    again = read_corpus(str(path), run_seed=3)
    assert again.prompts == corpus.prompts
    assert read_corpus(str(path), run_seed=4).prompts[0].seed != first.seed


def test_jsonl_ids_seeds_and_bad_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        '{"prompt": "a cat", "id": "c1", "seed": 7}',
        '{"prompt": "a dog"}',
        '[1, 2]',
        '{"prompt": "x", "seed": -1}',
        '{"prompt": "y", "seed": 18446744073709551617}',
        '{"prompt": "z", "seed": 1.5}',
        '{"caption": "no prompt column"}',
    ]
    path.write_text("\n".join(rows) + "\n")
    corpus = read_corpus(str(path))
    _expect(corpus, ["a cat", "a dog"])
    assert corpus.prompts[0].id == "c1" and corpus.prompts[0].seed == 7
    reasons = {f.line: f.reason for f in corpus.failures}
    assert reasons[3] == "expected a JSON object, got list"
    assert "outside [0, 2**63)" in reasons[4] and "outside [0, 2**63)" in reasons[5]
    assert "must be an integer" in reasons[6]
    assert "missing column 'prompt'" in reasons[7]


def test_duplicate_explicit_ids_fail_before_any_work(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n')
    with pytest.raises(CorpusError, match="duplicate id 'x' on lines 1 and 2"):
        read_corpus(str(path))


def test_csv_with_custom_columns(tmp_path):
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "caption", "s"])
        writer.writerows([["k1", "a cat, sitting", "5"], ["k2", "a dog", ""]])
    corpus = read_corpus(str(path), columns=ColumnNames(prompt="caption", id="key", seed="s"))
    _expect(corpus, ["a cat, sitting", "a dog"])
    assert [p.id for p in corpus.prompts] == ["k1", "k2"] and corpus.prompts[0].seed == 5


def test_parquet_and_limit(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "id": ["1", "2", "3"]}), path)
    _expect(read_corpus(str(path), limit=2), ["a", "b"])


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        read_corpus(str(path))


def test_hugging_face_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a cat", "a dog"]}).save_to_disk(str(tmp_path / "hf"))
    _expect(read_corpus(str(tmp_path / "hf"), columns=ColumnNames(prompt="text")), ["a cat", "a dog"])
    data_repo = tmp_path / "repo" / "data"
    data_repo.mkdir(parents=True)
    (data_repo / "train.jsonl").write_text(json.dumps({"prompt": "a fox"}) + "\n")
    _expect(read_corpus(str(tmp_path / "repo")), ["a fox"])


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "p.xml").write_text("<a/>")
    with pytest.raises(CorpusError, match="unknown format '.xml'"):
        read_corpus(str(tmp_path / "p.xml"))
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(str(tmp_path / "missing.txt"))

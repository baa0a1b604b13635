"""Prompt corpora: every input format, stable ids and seeds, duplicates, limits."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.corpus import ColumnNames, CorpusError, derive_seed, read_corpus


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


# --- files as real tools write them ---------------------------------------------------------


def test_spreadsheet_csv_with_bom_crlf_and_empty_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffprompt,id,seed\r\na cat,c1,5\r\n\"a dog, running\",c2,7.0\r\n,,\r\n\r\n".encode("utf-8"))
    corpus = read_corpus(str(path))
    _expect(corpus, ["a cat", "a dog, running"])
    assert [(p.id, p.seed) for p in corpus.prompts] == [("c1", 5), ("c2", 7)]
    assert corpus.blank == 2 and corpus.rows_read == 4 and corpus.accounted


def test_csv_rows_with_more_or_fewer_fields_than_the_header_fail(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,id\na cat,1\na dog\na fox,3,extra\n")
    corpus = read_corpus(str(path))
    _expect(corpus, ["a cat"])
    assert [(f.line, f.reason) for f in corpus.failures] == [
        (3, "row has 1 fields, the header has 2"), (4, "row has 3 fields, the header has 2")]


def test_csv_quote_left_open_fails_one_line_only(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,id\n"a cat,1\na dog,2\na fox,3\n')
    corpus = read_corpus(str(path))
    _expect(corpus, ["a dog", "a fox"])
    assert [(f.line, f.reason) for f in corpus.failures] == [(2, "a quote opened on line 2 is never closed")]


@pytest.mark.parametrize("data", ["\ufeffa cat\r\na dog\r\n".encode("utf-16"), b"a cat\ra dog\r", b"\xef\xbb\xbfa cat\na dog"],
                         ids=["utf-16 with BOM", "old Mac CR", "utf-8 BOM, no final newline"])
def test_txt_encodings_and_line_endings(tmp_path, data):
    path = tmp_path / "p.txt"
    path.write_bytes(data)
    _expect(read_corpus(str(path)), ["\ufeffa cat" if data.startswith(b"\xff\xfe\xff\xfe") else "a cat", "a dog"])


def test_jsonl_with_bom_and_nulls_in_every_column(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a cat", "id": null, "seed": null, "negative_prompt": null}\r\n'
                     b'{"prompt": null}\r\n{"prompt": null, "id": "k"}\r\n')
    corpus = read_corpus(str(path))
    _expect(corpus, ["a cat"])
    assert corpus.prompts[0].negative_prompt == "" and corpus.blank == 1
    assert [(f.line, f.id, f.reason) for f in corpus.failures] == [(3, "k", "prompt is empty")]


@pytest.mark.parametrize(("row", "reason"), [
    ({"prompt": "\u200b"}, "no visible character (only U+200B ZERO WIDTH SPACE)"),
    ({"prompt": "\ufeff\u2060"}, "no visible character"),
    ({"prompt": "\u0301\u3164"}, "no visible character"),
    ({"prompt": "a", "id": "   "}, "id has no visible character"),
    ({"prompt": "a", "id": "k#1"}, "contains '#'"),
    ({"prompt": "a", "id": True}, "id must be a string or an integer"),
    ({"prompt": "a", "seed": float("nan")}, "finite integer"),
    ({"prompt": "a", "seed": 1.5}, "must be an integer"),
    ({"prompt": "a", "seed": True}, "must be an integer, got bool"),
    ({"prompt": "a", "seed": 2**63}, "outside [0, 2**63)"),
    ({"prompt": "a", "seed": "12abc"}, "must be an integer, got text '12abc'"),
    ({"prompt": "a", "negative_prompt": 3}, "negative prompt must be a string"),
    ({"prompt": "x" * 70_000}, "longer than 65536 bytes"),
], ids=lambda v: str(v)[:40])
def test_rows_that_become_failures(tmp_path, row, reason):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n{\"prompt\": \"ok\"}\n")
    corpus = read_corpus(str(path))
    _expect(corpus, ["ok"])
    assert corpus.failures[0].line == 1 and reason in corpus.failures[0].reason


def test_whitespace_prompts_are_blank_and_seeds_are_exact(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": " \\u00a0\\u3000 "}\n{"prompt": "a", "seed": 9007199254740993.0}\n{"prompt": "b", "seed": "7e2"}\n')
    corpus = read_corpus(str(path))
    assert corpus.blank == 1 and [p.seed for p in corpus.prompts] == [9007199254740993, 700]


@pytest.mark.parametrize("given_first", [False, True])
def test_generated_id_given_by_another_row_is_refused(tmp_path, given_first):
    from transforms.corpus import content_id

    rows = [{"prompt": "a"}, {"prompt": "a"}, {"prompt": "b", "id": content_id("a", None) + "-2"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (rows[::-1] if given_first else rows)))
    with pytest.raises(CorpusError, match="is given explicitly and also generated"):
        read_corpus(str(path))


# --- bounded memory -------------------------------------------------------------------------


def test_a_huge_single_line_is_skipped_without_being_held(tmp_path):
    import tracemalloc

    path = tmp_path / "p.txt"
    with path.open("wb") as fh:
        fh.write(b"a cat\n")
        for _ in range(320):
            fh.write(b"x" * 65536)  # 20 MiB, no line break
        fh.write(b"\na dog\n")
    tracemalloc.start()
    try:
        corpus = read_corpus(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _expect(corpus, ["a cat", "a dog"])
    assert [(f.line, f.reason) for f in corpus.failures] == [(2, "the line is longer than 65536 bytes")]
    assert peak < 2 * 2**20, f"reading held {peak} bytes"


def test_paths_that_are_not_files_are_refused_before_reading(tmp_path):
    import os
    import socket

    os.mkfifo(tmp_path / "fifo.txt")
    with pytest.raises(CorpusError, match="is a named pipe"):
        read_corpus(str(tmp_path / "fifo.txt"))
    with pytest.raises(CorpusError, match="is a character device"):
        read_corpus("/dev/zero")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s.txt"))
        with pytest.raises(CorpusError, match="is a socket"):
            read_corpus(str(tmp_path / "s.txt"))
    with pytest.raises(CorpusError, match="the path is empty"):
        read_corpus("")


def test_row_and_failure_caps(tmp_path, monkeypatch):
    import transforms.corpus.records as corpus_module

    path = tmp_path / "p.txt"
    path.write_text("a\nb\nc\n\n")
    monkeypatch.setattr(corpus_module, "MAX_ROWS", 3)
    with pytest.raises(CorpusError, match="more than 3 rows; split the corpus"):
        read_corpus(str(path))
    limited = read_corpus(str(path), limit=2)
    assert limited.rows_read == 2 and limited.stopped_at_limit
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c", "d"]}), parquet)
    with pytest.raises(CorpusError, match="more than 3 rows"):
        read_corpus(str(parquet))
    monkeypatch.setattr(corpus_module, "MAX_READ_FAILURES", 2)
    path.write_bytes(b"\xff\n\xff\n\xff\n")
    with pytest.raises(CorpusError, match="more than 2 unreadable rows"):
        read_corpus(str(path))


def test_dataset_folder_without_the_split(tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"prompt": ["a"]})}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(CorpusError, match="no split 'train' \\(splits: test\\)"):
        read_corpus(str(tmp_path / "hf"))

"""A user's files are sacred: ``run --output``, ``--overwrite``, ``publish --to``, ``validate
--repair`` and ``preview`` refuse a folder of files daam-datasets did not write, before any work and
without writing anything there, and never overwrite or delete such a file in an output of theirs."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from datasets import load_dataset

from pipeline.errors import PublishError
from pipeline.ownership import PREVIEW_RECORD, foreign_files, ours
from pipeline.publish import publish_to_path
from pipeline.validate import validate_output
from tests.conftest import CORPUS_NAME, FAST_ARGS, PROMPTS, copy_output
from transforms.shards.layout import OutputLayout

SHARDS = ["train-00000-of-00002", "train-00001-of-00002"]
ARGS = [*FAST_ARGS, "--shard-size", "2", "--format", "parquet,webdataset"]  # test_validate's output: built once
NEW_FOLDER = "choose a new or empty folder"


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (hidden ones too): a file's bytes and mtime, a folder as ``dir``."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _refused(err: str, line: str) -> None:
    """``err`` is exactly ``error: <line>``, one line."""
    assert err == f"error: {line}\n", err


@pytest.fixture(scope="module")
def pristine(built_output) -> Path:
    """A finished output of ours: 4 prompts, 2 shards, Parquet and WebDataset (read only)."""
    return built_output(PROMPTS[:4], *ARGS)


@pytest.fixture
def out(pristine, tmp_path) -> Path:
    """A private copy of the output, its corpus beside it."""
    return copy_output(pristine, tmp_path / "out")


def _run(run_cli, out: Path, *extra: object) -> tuple[int, str, str]:
    return run_cli("run", "--prompts", out.parent / CORPUS_NAME, "--output", out, *ARGS, *extra)


def _user_files(out: Path) -> dict[str, bytes]:
    """Put a user's notes, a CSV in ``data/`` and a picture in ``preview/`` into ``out``."""
    files = {"notes.txt": b"my notes\n", "data/mine.csv": b"a,b\n1,2\n", "preview/mine.png": b"\x89PNG mine"}
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return files


# -- run --output: a folder of a user's files ------------------------------------------------------
@pytest.mark.parametrize("files, named", [
    ({"README.md": "# mine\n", "notes.txt": "x\n"}, "README.md, notes.txt"),
    ({"run.json": '{"name": "another tool"}\n'}, "run.json"),  # not our run record
    ({"README.md": "---\n---\n", "data/train-00000-of-00001.parquet": "PAR1"},  # a downloaded dataset
     "README.md, data/train-00000-of-00001.parquet"),
    ({**{f"f{i:02d}.txt": "x" for i in range(10)}, "data/mine.csv": "a\n", ".hidden": "h"},
     ".hidden, f00.txt, f01.txt, … 12 in all"),
], ids=["readme-and-notes", "foreign-run-json", "downloaded-dataset", "many"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_foreign_folder_refused_untouched(tmp_path, run_cli, write_corpus, files, named, overwrite):
    folder = tmp_path / "mine"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    before = _snapshot(folder)
    extra = ["--overwrite"] if overwrite else []
    code, stdout, err = run_cli("run", "--prompts", write_corpus(["a cat"]), "--output", folder, *FAST_ARGS, *extra)
    assert code == 2 and stdout == ""
    _refused(err, f"--output {folder}: holds files daam-datasets did not write ({named}); {NEW_FOLDER}")
    assert _snapshot(folder) == before  # same bytes and mtimes, no .tmp/, no .lock


def test_corpus_folder_refused_before_the_corpus_or_model_is_read(tmp_path, run_cli):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a cat\n")
    before = _snapshot(tmp_path)
    code, _, err = run_cli("run", "--prompts", corpus, "--output", tmp_path, "--model", tmp_path / "no-model")
    assert code == 2
    _refused(err, f"--output {tmp_path}: holds files daam-datasets did not write (prompts.txt); {NEW_FOLDER}")
    assert _snapshot(tmp_path) == before


def test_empty_folder_and_own_bookkeeping_accepted(tmp_path, run_cli, write_corpus):
    corpus = write_corpus(["a cat", "a dog"])
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stdout, err = run_cli("run", "--prompts", corpus, "--output", empty, *FAST_ARGS)
    assert code == 0, err
    assert load_dataset(str(empty), split="train").num_rows == 2
    # what a run that died before writing run.json leaves: only bookkeeping named as ours
    early = tmp_path / "early"
    for rel in (".lock", ".tmp/x.parquet.0123.part", "_manifest/train-00000-of-00001.jsonl", "_failures/read.jsonl"):
        (early / rel).parent.mkdir(parents=True, exist_ok=True)
        (early / rel).write_text("{}\n")
    assert foreign_files(OutputLayout(str(early))) == []
    code, _, err = run_cli("run", "--prompts", corpus, "--output", early, *FAST_ARGS)
    assert code == 0, err
    assert validate_output(str(early)) == []


def test_earlier_output_accepted_and_resumed(out, run_cli):
    (out / "_stats" / f"{SHARDS[1]}.json").unlink()
    code, stdout, err = _run(run_cli, out)
    assert code == 0, err
    assert "1 shards skipped" in stdout
    assert validate_output(str(out)) == []


# -- an output of ours a user added files to --------------------------------------------------------
def test_user_files_in_an_output_are_left_alone(out, run_cli, caplog):
    files = _user_files(out)
    (out / "_stats" / f"{SHARDS[0]}.json").unlink()  # resume rewrites shard 0
    before = _snapshot(out)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        code, stdout, err = _run(run_cli, out)
    assert code == 0, err
    assert f"--output {out}: 3 files daam-datasets did not write, left untouched " \
           "(notes.txt, data/mine.csv, preview/mine.png)" in caplog.messages
    after = _snapshot(out)
    assert all(after[rel] == before[rel] for rel in files)
    assert sorted(foreign_files(OutputLayout(str(out)))) == sorted(files)


def test_overwrite_removes_only_ours_and_says_so(out, run_cli, caplog):
    files = _user_files(out)
    (out / "prompts.txt").write_text("the corpus, kept in the output\n")
    (out / ".tmp").mkdir()
    (out / ".tmp" / "x.part").write_bytes(b"half")
    before = _snapshot(out)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        code, stdout, err = _run(run_cli, out, "--steps", "3", "--format", "parquet", "--overwrite")
    assert code == 0, err
    line = next(m for m in caplog.messages if m.startswith("--overwrite:"))
    assert line == ("--overwrite: removed 11 files of the earlier run (4 data files, 2 manifests, 2 stats markers, "
                    "1 dataset card, 1 run record, 1 temporary file); kept 4 files daam-datasets did not write "
                    "(notes.txt, prompts.txt, data/mine.csv, … 4 in all)")
    after = _snapshot(out)
    for rel in [*files, "prompts.txt"]:
        assert after[rel] == before[rel], rel
    assert not (out / "wds").exists(), "the earlier run's WebDataset shards went, and their emptied folder"
    assert load_dataset(str(out), split="train").num_rows == 4  # the card reads data/train-*.parquet only
    assert [(p.kind, p.file) for p in validate_output(str(out))] == [("stray_file", "data/mine.csv")]


# -- preview ----------------------------------------------------------------------------------------
def test_preview_keeps_a_users_file_and_records_its_own(out, run_cli):
    from pipeline.preview import write_preview

    pytest.importorskip("matplotlib")
    (out / "preview").mkdir()
    (out / "preview" / "mine.png").write_bytes(b"mine")
    write_preview(str(out), n=3, grid=1)
    write_preview(str(out), n=1, grid=1)  # fewer samples: the stale assets of the first go
    recorded = set(json.loads((out / PREVIEW_RECORD).read_text())["files"])
    written = {p.relative_to(out).as_posix() for p in (out / "preview").rglob("*") if p.is_file()}
    assert written == recorded | {"preview/mine.png"}
    assert "preview/assets/002/image.jpg" not in written
    assert (out / "preview" / "mine.png").read_bytes() == b"mine"
    assert recorded <= ours(OutputLayout(str(out)))
    code, _, err = _run(run_cli, out, "--overwrite")
    assert code == 0, err
    assert [p.relative_to(out).as_posix() for p in (out / "preview").rglob("*")] == ["preview/mine.png"]
    assert not (out / PREVIEW_RECORD).exists()


def test_preview_refuses_a_folder_of_a_users_files(tmp_path, run_cli):
    (tmp_path / "README.md").write_text("# mine\n")
    before = _snapshot(tmp_path)
    code, _, err = run_cli("preview", tmp_path)
    assert code == 2
    _refused(err, f"preview {tmp_path}: holds files daam-datasets did not write (README.md); "
                  "preview writes only into an output of daam-datasets")
    assert _snapshot(tmp_path) == before


# -- publish --to ---------------------------------------------------------------------------------
def quiet(_: str) -> None:
    pass


def test_publish_into_a_foreign_folder_refused(pristine, tmp_path, run_cli):
    dest = tmp_path / "site"
    dest.mkdir()
    (dest / "index.html").write_text("<p>my site</p>\n")
    before = _snapshot(dest)
    code, _, err = run_cli("publish", pristine, "--to", dest)
    assert code == 2
    _refused(err, f"--to {dest}: holds files daam-datasets did not write (index.html); {NEW_FOLDER}")
    assert _snapshot(dest) == before
    (dest / "index.html").unlink()
    code, _, err = run_cli("publish", pristine, "--to", dest)  # now empty: fine
    assert code == 0, err


def test_publish_into_its_own_destination_keeps_a_users_files(pristine, tmp_path, run_cli, built_output):
    dest = tmp_path / "published"
    assert publish_to_path(str(pristine), str(dest), log=quiet).commits
    files = {"notes.txt": b"mine\n", "data/extra.parquet": b"PAR1 mine", f"data/{SHARDS[0]}.csv": b"a\n"}
    for rel, data in files.items():
        (dest / rel).write_bytes(data)
    smaller = built_output(PROMPTS[:2], *FAST_ARGS, "--shard-size", "2", "--format", "parquet,webdataset")
    result = publish_to_path(str(smaller), str(dest), log=quiet)  # 1 shard now: the earlier 2 go
    assert result.plan.delete == [f"{folder}/{s}.{ext}" for folder, ext in (("data", "parquet"), ("wds", "tar"))
                                  for s in SHARDS]
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert not any(rel in json.loads((dest / ".daam-publish.json").read_text()) for rel in files)
    # a user's file where publish would copy: refused, nothing changed
    manifest = json.loads((dest / ".daam-publish.json").read_text())
    manifest.pop("run.json")
    (dest / ".daam-publish.json").write_text(json.dumps(manifest))  # as if a user had put run.json there
    before = _snapshot(dest)
    code, _, err = run_cli("publish", pristine, "--to", dest)
    assert code == 2
    _refused(err, f"--to {dest}: holds files publish did not copy there where it would copy (run.json); "
                  "move them away or choose a new folder")
    assert _snapshot(dest) == before


def test_publish_records_each_copy_before_it(pristine, tmp_path, monkeypatch):
    """A copy that fails half-way leaves only files the record names: the rerun resumes."""
    from pipeline.publish import to_path

    dest = tmp_path / "published"
    real_copy, calls = to_path._copy, []

    def failing(src, f, target):
        calls.append(f.path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_copy(src, f, target)

    monkeypatch.setattr(to_path, "_copy", failing)
    with pytest.raises(PublishError, match=r"cannot write \(No space left on device\); rerun to resume"):
        publish_to_path(str(pristine), str(dest), log=quiet)
    recorded = json.loads((dest / ".daam-publish.json").read_text())
    assert (dest / calls[0]).exists() and recorded[calls[0]] == recorded[calls[1]] == {"bytes": None, "sha256": None}
    monkeypatch.setattr(to_path, "_copy", real_copy)
    result = publish_to_path(str(pristine), str(dest), log=quiet)
    assert calls[0] not in {f.path for f in result.plan.upload}, "the copy before the failure is kept"
    recorded = json.loads((dest / ".daam-publish.json").read_text())
    assert recorded[calls[0]]["sha256"] == hashlib.sha256((dest / calls[0]).read_bytes()).hexdigest()


# -- validate --repair --------------------------------------------------------------------------------
def _damage(out: Path) -> None:
    shard = out / "data" / f"{SHARDS[0]}.parquet"
    shard.write_bytes(shard.read_bytes()[:100])


@pytest.mark.parametrize("stray", ["loader.py", "data/mine.csv", f"data/{SHARDS[1]}-copy.parquet"])
def test_repair_refuses_to_delete_a_users_stray_file(out, run_cli, stray):
    _damage(out)
    (out / stray).write_bytes(b"mine")
    before = _snapshot(out)
    code, _, err = run_cli("validate", out, "--repair")
    assert code == 2
    assert err.splitlines()[-1] == (
        f"error: repair failed: {out}: holds stray files daam-datasets did not write ({stray}); "
        "--repair deletes only its own files: move them away and rerun")
    assert _snapshot(out) == before


def test_repair_deletes_only_ours(out, pristine, run_cli, caplog):
    _damage(out)
    (out / "notes.txt").write_bytes(b"mine")  # not a stray file: validate leaves it
    (out / "data" / "train-00007-of-00009.parquet").write_bytes(b"uncommitted shard of ours")
    (out / ".tmp").mkdir()
    (out / ".tmp" / "x.parquet.0123.part").write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        code, stdout, err = run_cli("validate", out, "--repair")
    assert code == 0, err
    assert "repaired, OK" in stdout
    assert "repair: removed 5 files of the damaged output (3 data files, 1 stats marker, 1 temporary file)" \
        in caplog.messages
    assert (out / "notes.txt").read_bytes() == b"mine"
    assert not (out / "data" / "train-00007-of-00009.parquet").exists()
    assert (out / "data" / f"{SHARDS[0]}.parquet").read_bytes() == (pristine / "data" / f"{SHARDS[0]}.parquet").read_bytes()

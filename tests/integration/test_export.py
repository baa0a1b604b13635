"""``daam-datasets export`` (hf, mmseg, voc) of an output's segmentation config: file pairs,
labels, splits, the hf folder as ``load_dataset`` and transformers read it, the destination's
user-files rule, ids that are not file names, and every refusal as one line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Features, Image, load_dataset
from PIL import Image as PILImage

from pipeline.cli import main as cli_main
from pipeline.errors import ExportError
from pipeline.export import EXPORT_RECORD, export_output, file_stem, split_of
from pipeline.export.labels import voc_palette
from schemas.record import segmentation_features
from tests.conftest import FAST_ARGS, SEGMENTATION_ARGS, SEGMENTATION_PROMPTS, copy_output

SEGMENTED = len(SEGMENTATION_PROMPTS) - 1  # "a caterpillar eating a hotdog" names no class
FEATURES = segmentation_features()
UNSAFE_ROWS = [
    {"id": "photos/a dog", "prompt": "a dog on a sofa"},
    {"id": "my cat photo", "prompt": "a photo of a cat"},
    {"id": "Café ☕ 1", "prompt": "a cup of coffee on a dining table"},
    {"id": "CAT", "prompt": "a black cat"},
    {"id": "cat", "prompt": "a white cat"},
    {"id": "con", "prompt": "a horse"},
]


@pytest.fixture(scope="module")
def seg_output(segmentation_output) -> Path:
    """``run --classes voc`` on conftest's ``SEGMENTATION_PROMPTS``: 5 of 6 rows name a VOC class, 2 shards."""
    return segmentation_output


@pytest.fixture(scope="module")
def unsafe_output(tmp_path_factory) -> Path:
    """Rows whose ids are no file names ('/', spaces, Unicode, case, a device name; '#1' of a second image)."""
    root = tmp_path_factory.mktemp("unsafe")
    corpus = root / "prompts.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in UNSAFE_ROWS), encoding="utf-8")
    out = root / "out"
    assert cli_main(["run", "--prompts", str(corpus), "--output", str(out), *SEGMENTATION_ARGS, "--images-per-prompt", "2"]) == 0
    return out


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def segmentation_rows(output: Path) -> list[dict]:
    """Every row of the segmentation config (id, classes)."""
    tables = [pq.read_table(f, columns=["id", "classes"]) for f in sorted((output / "segmentation").glob("*.parquet"))]
    return pa.concat_tables(tables).to_pylist()


def class_names(output: Path) -> list[str]:
    return ["background", *json.loads((output / "run.json").read_text())["settings"]["segmentation"]["classes"]]


def rows_naming(output: Path, name: str) -> int:
    return sum(name in row["classes"] for row in segmentation_rows(output))


def files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def label_values_ok(array: np.ndarray, k: int) -> bool:
    values = set(np.unique(array).tolist())
    return values <= set(range(k + 1)) | {255}


def read_list(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def exports(seg_output, tmp_path_factory) -> dict[str, Path]:
    """The output exported once per layout, half the rows in validation."""
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for layout in ("hf", "mmseg", "voc"):
        export_output(str(seg_output), str(root / layout), layout=layout, validation_fraction=0.5)
        made[layout] = root / layout
    return made


def expected_splits(output: Path, fraction: float = 0.5) -> dict[str, set[str]]:
    """Row ids by split, as the export must assign them."""
    splits: dict[str, set[str]] = {"train": set(), "validation": set()}
    for row in segmentation_rows(output):
        splits[split_of(row["id"], fraction)].add(row["id"])
    return splits


# -- hf ----------------------------------------------------------------------------------------------
def test_hf_export_is_a_dataset_whose_default_config_is_segmentation(seg_output, exports):
    dest = exports["hf"]
    ids = expected_splits(seg_output)
    assert ids["train"] and ids["validation"], "the fixture's ids should fill both splits at 0.5"
    ds = load_dataset(str(dest))
    assert set(ds) == {"train", "validation"}
    for split, dataset in ds.items():
        assert isinstance(dataset.features["image"], Image) and isinstance(dataset.features["label"], Image)
        assert set(dataset["id"]) == ids[split]
    k = len(class_names(seg_output)) - 1
    for row in ds["train"]:  # as run_semantic_segmentation.py reads a row
        label = row["label"]
        assert label.mode == "L" and label.size == row["image"].size and row["image"].mode == "RGB"
        mask = np.array(label)
        assert mask.dtype == np.uint8 and mask.shape == np.array(row["image"].convert("RGB")).shape[:2]
        assert label_values_ok(mask, k)
        assert row["classes"]
    id2label = json.loads((dest / "id2label.json").read_text())
    assert list(id2label.values()) == class_names(seg_output) and list(id2label) == [str(i) for i in range(k + 1)]
    assert {int(key) for key in id2label} == set(range(k + 1))  # as run_semantic_segmentation.py reads it
    assert files_of(dest) == {EXPORT_RECORD, "README.md", "id2label.json",
                              "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"}


def test_hf_export_parquet_and_card(seg_output, exports):
    dest = exports["hf"]
    parquet = pq.ParquetFile(dest / "data" / "train-00000-of-00001.parquet")
    assert Features.from_arrow_schema(parquet.schema_arrow) == FEATURES
    assert b"huggingface" in parquet.schema_arrow.metadata
    assert all(parquet.metadata.row_group(i).num_rows <= 100 for i in range(parquet.num_row_groups))
    assert parquet.metadata.row_group(0).column(0).has_offset_index  # page index written
    card = (dest / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*.parquet"}, {"split": "validation", "path": "data/validation-*.parquet"}]}]
    assert Features._from_yaml_list(front["dataset_info"]["features"]) == FEATURES
    assert [s["num_examples"] for s in front["dataset_info"]["splits"]] == [len(v) for v in expected_splits(seg_output).values()]
    assert "## Classes" in card and f"| 12 | dog | {rows_naming(seg_output, 'dog')} |" in card
    assert "--dataset_name path/or/org-name" in card and 'load_dataset("path/or/org-name")' in card


def test_hf_export_without_validation(seg_output, tmp_path):
    result = export_output(str(seg_output), str(tmp_path / "hf"), layout="hf", validation_fraction=0)
    assert (result.train, result.validation) == (SEGMENTED, 0)
    ds = load_dataset(str(tmp_path / "hf"))
    assert set(ds) == {"train"} and ds["train"].num_rows == SEGMENTED


# -- mmseg and voc -------------------------------------------------------------------------------------
def _pairs(dest: Path, image_dir: str, label_dir: str, image_suffix: str) -> dict[str, tuple[Path, Path]]:
    images = {p.name[: -len(image_suffix)]: p for p in (dest / image_dir).glob(f"*{image_suffix}")}
    labels = {p.name[: -len(".png")]: p for p in (dest / label_dir).glob("*.png")}
    assert set(images) == set(labels), "every image has its label map and no label map is alone"
    return {stem: (images[stem], labels[stem]) for stem in images}


def _ids(dest: Path) -> dict[str, dict]:
    return {entry["stem"]: entry for entry in map(json.loads, read_list(dest / "ids.jsonl"))}


def test_mmseg_export_pairs_labels_and_splits(seg_output, exports):
    dest = exports["mmseg"]
    k = len(class_names(seg_output)) - 1
    ids = _ids(dest)
    expected = expected_splits(seg_output)
    for split, ours in (("train", "train"), ("validation", "val")):
        pairs = _pairs(dest, f"img_dir/{ours}", f"ann_dir/{ours}", ".png")
        listed = read_list(dest / "splits" / f"{ours}.txt")
        assert listed == sorted(pairs) and {ids[stem]["id"] for stem in listed} == expected[split]
        assert all(ids[stem]["split"] == ours for stem in listed)
        for image_path, label_path in pairs.values():
            image, label = PILImage.open(image_path), PILImage.open(label_path)
            assert image.mode == "RGB" and label.mode == "L" and image.size == label.size
            assert label_values_ok(np.asarray(label), k)
    assert set(read_list(dest / "splits/train.txt")).isdisjoint(read_list(dest / "splits/val.txt"))
    metainfo = json.loads((dest / "classes.json").read_text())
    assert metainfo["classes"] == class_names(seg_output)
    assert metainfo["palette"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert "reduce_zero_label=False" in (dest / "README.md").read_text()


def test_voc_export_palette_pngs_and_image_sets(seg_output, exports):
    dest = exports["voc"]
    k = len(class_names(seg_output)) - 1
    pairs = _pairs(dest, "JPEGImages", "SegmentationClass", ".jpg")
    assert len(pairs) == SEGMENTED
    palette = [channel for colour in voc_palette() for channel in colour]
    for image_path, label_path in pairs.values():
        image, label = PILImage.open(image_path), PILImage.open(label_path)
        assert image.format == "JPEG" and label.mode == "P" and image.size == label.size
        assert label.getpalette()[: len(palette)] == palette and label.getpalette()[3 * 255:] == [224, 224, 192]
        assert label_values_ok(np.asarray(label), k)
    assert voc_palette()[255] == (224, 224, 192)
    sets = dest / "ImageSets" / "Segmentation"
    train, val, both = (read_list(sets / f"{name}.txt") for name in ("train", "val", "trainval"))
    assert set(train).isdisjoint(val) and sorted(train + val) == both == sorted(pairs)
    ids = _ids(dest)
    assert {ids[s]["id"] for s in val} == expected_splits(seg_output)["validation"]
    assert read_list(dest / "labels.txt") == class_names(seg_output)


def test_split_is_stable_across_reruns_and_layouts(seg_output, exports, tmp_path):
    again = tmp_path / "again"
    export_output(str(seg_output), str(again), layout="mmseg", validation_fraction=0.5)
    for name in ("train", "val"):
        assert read_list(again / "splits" / f"{name}.txt") == read_list(exports["mmseg"] / "splits" / f"{name}.txt")
    voc_val = read_list(exports["voc"] / "ImageSets/Segmentation/val.txt")
    assert voc_val == read_list(again / "splits/val.txt")
    hf_val = load_dataset(str(exports["hf"]), split="validation")["id"]
    assert sorted(file_stem(i) for i in hf_val) == voc_val


def test_progress_lines_and_any_fsspec_destination(seg_output, caplog):
    dest = "memory://daam-export-test/mmseg"
    with caplog.at_level(logging.INFO, logger="pipeline.export"):
        result = export_output(str(seg_output), dest, layout="mmseg", validation_fraction=0.5, progress_every=2)
    messages = [r.getMessage() for r in caplog.records]
    assert "export mmseg: 2/5 rows" in messages and "export mmseg: 4/5 rows" in messages
    assert result.line() == f"exported 5 rows (2 train, 3 validation) to {dest} as mmseg"
    fs = fsspec.filesystem("memory")
    files = {p.split("/mmseg/", 1)[1] for p in fs.find("/daam-export-test/mmseg")}
    assert len([f for f in files if f.startswith(("img_dir/", "ann_dir/"))]) == 2 * SEGMENTED
    assert set(json.loads(fs.cat_file("/daam-export-test/mmseg/" + EXPORT_RECORD))["files"]) == files - {EXPORT_RECORD}
    fs.rm("/daam-export-test", recursive=True)


# -- unsafe ids -----------------------------------------------------------------------------------------
def test_unsafe_ids_get_safe_unique_stems(unsafe_output, tmp_path):
    rows = segmentation_rows(unsafe_output)
    ids = {row["id"] for row in rows}
    assert {"photos/a dog", "photos/a dog#1", "Café ☕ 1", "CAT", "cat#1", "con"} <= ids
    dest = tmp_path / "voc"
    result = export_output(str(unsafe_output), str(dest), layout="voc", validation_fraction=0.3)
    assert result.rows == len(rows)
    mapping = _ids(dest)
    assert {entry["id"] for entry in mapping.values()} == ids and len(mapping) == len(ids)
    assert {stem.lower() for stem in mapping} == set(mapping)  # unique on case-insensitive file systems too
    assert file_stem("con").startswith("con--") and mapping[file_stem("con")]["id"] == "con"  # a device name on Windows
    assert mapping["cat"]["id"] == "cat" and mapping[file_stem("CAT")]["id"] == "CAT" != file_stem("CAT")
    for stem in mapping:
        assert (dest / "JPEGImages" / f"{stem}.jpg").is_file() and (dest / "SegmentationClass" / f"{stem}.png").is_file()
        assert "/" not in stem and " " not in stem and "#" not in stem and stem.isascii()
    assert {p.parent for p in (dest / "JPEGImages").rglob("*.jpg")} == {dest / "JPEGImages"}
    export_output(str(unsafe_output), str(tmp_path / "again"), layout="voc", validation_fraction=0.3)
    assert _ids(tmp_path / "again") == mapping


# -- the destination belongs to the user, except what export wrote -----------------------------------
def test_rerun_replaces_only_its_own_files(seg_output, tmp_path, run_cli):
    dest = tmp_path / "dest"
    code, stdout, stderr = run_cli("export", seg_output, "--to", dest, "--layout", "mmseg", "--validation-fraction", "0")
    assert code == 0, stderr
    assert stdout.strip() == f"exported {SEGMENTED} rows ({SEGMENTED} train, 0 validation) to {dest} as mmseg"
    (dest / "notes.txt").write_text("mine")
    (dest / "img_dir" / "mine.png").write_bytes(b"a user's image")
    record = json.loads((dest / EXPORT_RECORD).read_text())
    assert record["complete"] and set(record["files"]) == files_of(dest) - {EXPORT_RECORD, "notes.txt", "img_dir/mine.png"}
    code, stdout, stderr = run_cli("export", seg_output, "--to", dest, "--layout", "mmseg", "--validation-fraction", "0.5")
    assert code == 0, stderr
    assert (dest / "notes.txt").read_text() == "mine" and (dest / "img_dir" / "mine.png").read_bytes() == b"a user's image"
    moved = expected_splits(seg_output)["validation"]
    assert len(list((dest / "img_dir" / "train").glob("*.png"))) == SEGMENTED - len(moved)  # moved files are gone
    assert len(list((dest / "img_dir" / "val").glob("*.png"))) == len(moved)
    # another layout into the same folder: the earlier export's files go, the user's stay
    code, _, stderr = run_cli("export", seg_output, "--to", dest, "--layout", "voc")
    assert code == 0, stderr
    assert not (dest / "ann_dir").exists() and not (dest / "img_dir" / "train").exists()
    assert files_of(dest) == set(json.loads((dest / EXPORT_RECORD).read_text())["files"]) | {
        EXPORT_RECORD, "notes.txt", "img_dir/mine.png"}
    assert not (dest / ".tmp").exists()


def test_a_users_file_where_export_would_write_is_refused(seg_output, tmp_path, run_cli):
    dest = tmp_path / "dest"
    assert run_cli("export", seg_output, "--to", dest, "--layout", "voc")[0] == 0
    (dest / "README.md").unlink()
    record = json.loads((dest / EXPORT_RECORD).read_text())
    record["files"].remove("README.md")
    (dest / EXPORT_RECORD).write_text(json.dumps(record))
    (dest / "README.md").write_text("my notes")
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    code, _, stderr = run_cli("export", seg_output, "--to", dest, "--layout", "voc")
    assert code == 2
    assert stderr.strip() == (f"error: --to {dest}: holds files export did not write where it would write (README.md); "
                              "move them away or choose a new folder")
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before


@pytest.fixture
def plain_output(built_output) -> Path:
    """An output made without --classes."""
    return built_output(SEGMENTATION_PROMPTS[:2], *FAST_ARGS)


def test_refusals_are_one_line_and_write_nothing(seg_output, plain_output, tmp_path, run_cli):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    unfinished = copy_output(seg_output, tmp_path / "unfinished" / "out")
    info = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**info, "status": "running"}))
    new = tmp_path / "new"
    cases = [
        ((tmp_path / "missing", "--to", new), f"error: {tmp_path / 'missing'}: no such output folder"),
        ((plain_output, "--to", new), f"error: {plain_output} has no segmentation config: run with --classes"),
        ((foreign, "--to", new), f"error: {foreign}: not an output of daam-datasets (no run.json)"),
        ((unfinished, "--to", new), f"error: {unfinished}: the run has not finished (run.json status 'running'); "
                                    "rerun the same `daam-datasets run` command to finish it"),
        ((seg_output, "--to", new, "--layout", "coco"), "error: daam-datasets export: argument --layout: invalid choice: "
                                                        "'coco' (choose from 'hf', 'mmseg', 'voc')"),
        ((seg_output, "--to", new, "--validation-fraction", "nan"),
         "error: daam-datasets export: argument --validation-fraction: expected a finite number in [0, 0.5], got 'nan'"),
        ((seg_output, "--to", new, "--validation-fraction", "0.9"),
         "error: daam-datasets export: argument --validation-fraction: expected a finite number in [0, 0.5], got '0.9'"),
        ((seg_output, "--to", a_file), f"error: --to {a_file}: is a file, not a folder"),
        ((seg_output, "--to", foreign), f"error: --to {foreign}: holds files daam-datasets did not write (notes.txt); "
                                        "choose a new or empty folder"),
        ((seg_output, "--to", seg_output), f"error: --to {seg_output}: is the output itself; choose a new folder"),
        ((seg_output,), "error: daam-datasets export: the following arguments are required: --to"),
    ]
    for args, message in cases:
        code, stdout, stderr = run_cli("export", *args)
        assert (code, stdout, stderr.strip()) == (2, "", message), args
    assert not new.exists() and files_of(foreign) == {"notes.txt"} and a_file.read_text() == "x"


def test_a_damaged_label_is_refused_naming_the_row(seg_output, tmp_path):
    damaged = copy_output(seg_output, tmp_path / "damaged" / "out")
    shard = sorted((damaged / "segmentation").glob("*.parquet"))[0]
    table = pq.read_table(shard).to_pylist()
    table[0]["label"] = {"bytes": _png(np.full((64, 64), 200, np.uint8)), "path": None}
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(shard)), shard)
    with pytest.raises(ExportError, match=rf"row '{table[0]['id']}': label has values 200 outside 0..20 and 255"):
        export_output(str(damaged), str(tmp_path / "dest"), layout="voc")
    dest = tmp_path / "dest"
    record = json.loads((dest / EXPORT_RECORD).read_text())
    assert not record["complete"] and files_of(dest) - {EXPORT_RECORD} <= set(record["files"])  # a rerun cleans up
    assert not any(p.is_file() for p in (dest / ".tmp").rglob("*"))

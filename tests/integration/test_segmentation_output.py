"""``run --classes``: label maps, class columns and the ``segmentation`` config, read back with
``datasets`` and ``webdataset``, checked by ``validate``, and the flags' one-line errors."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import yaml
from datasets import Image, load_dataset
from PIL import Image as PILImage

from pipeline.validate import validate_output
from tests.conftest import FAST_ARGS, SEGMENTATION_ARGS, SEGMENTATION_PROMPTS, copy_output
from transforms.attribution.classes import load_vocabulary

VOC = load_vocabulary("voc")
K = VOC.num_classes


def card_yaml(out) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))


@pytest.fixture(scope="module")
def rows(segmentation_output):
    return {r["prompt"]: r for r in load_dataset(str(segmentation_output), split="train")}


def test_rows_name_their_classes_with_spans(rows):
    names = {p: [c["name"] for c in r["classes"]] for p, r in rows.items()}
    assert names == {
        "a dog sleeping on a couch": ["dog", "sofa"],  # synonym
        "two cats and a potted plant": ["cat", "potted plant"],  # plural, multi-word
        "a red bicycle next to a dining table": ["bicycle", "dining table"],
        "puppies playing near a sheep": ["dog", "sheep"],  # irregular plural via synonyms
        "a caterpillar eating a hotdog": [],  # no class inside another word
        "a person riding a horse": ["person", "horse"],
    }
    row = rows["two cats and a potted plant"]
    plant = next(c for c in row["classes"] if c["name"] == "potted plant")
    assert plant["label"] == VOC.label("potted plant")
    [span] = plant["spans"]
    assert [w["word"] for w in row["words"] if span["start"] <= w["start"] < span["end"]] == ["potted", "plant"]


def test_label_maps_are_class_indices_at_image_size(rows):
    for prompt, row in rows.items():
        label = row["label"]
        assert label.mode == "L" and label.size == row["image"].size
        values = set(np.unique(np.asarray(label)).tolist())
        assert values <= {0, 255, *(c["label"] for c in row["classes"])}, prompt
        maps = np.asarray(row["class_maps"])
        assert len(row["classes"]) == (maps.shape[0] if maps.ndim == 3 else 0)
        if maps.ndim == 3:
            assert maps.shape[1:] == np.asarray(row["token_maps"]).shape[1:] and np.isfinite(maps).all()
    assert set(np.unique(np.asarray(rows["a caterpillar eating a hotdog"]["label"])).tolist()) == {0}


def test_quality_columns_are_fractions_and_agree_with_the_label(rows):
    for row in rows.values():
        label = np.asarray(row["label"])
        for c in row["classes"]:
            assert c["area"] == pytest.approx((label == c["label"]).mean(), abs=1e-6)
            assert 0 <= c["ignore_fraction"] <= (label == 255).mean() + 1e-6
            assert c["peak"] > 0 and 0 <= c["agreement"] <= 1


def test_segmentation_config_and_id2label(segmentation_output, rows):
    seg = load_dataset(str(segmentation_output), "segmentation", split="train")
    assert isinstance(seg.features["image"], Image) and isinstance(seg.features["label"], Image)
    assert set(seg.column_names) == {"id", "prompt", "image", "label", "classes"}
    assert sorted(seg["prompt"]) == sorted(p for p, r in rows.items() if r["classes"])
    for row in seg:
        assert np.array_equal(np.asarray(row["label"]), np.asarray(rows[row["prompt"]]["label"]))
    id2label = json.loads((segmentation_output / "id2label.json").read_text())
    assert id2label == {str(i): n for i, n in enumerate(VOC.labels)}
    run = json.loads((segmentation_output / "run.json").read_text())
    assert run["settings"]["segmentation"]["classes"] == list(VOC.names)
    # the Stable Diffusion family's defaults, chosen by the leaderboard (model_family.LABEL_DEFAULTS)
    assert run["settings"]["segmentation"]["threshold"] == 0.4 and run["settings"]["segmentation"]["power"] == 1
    assert run["settings"]["segmentation"]["refine"] is True and run["settings"]["segmentation"]["label_maps"] == "daam"
    meta = card_yaml(segmentation_output)
    assert [c["config_name"] for c in meta["configs"]] == ["default", "segmentation"]
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert infos["segmentation"]["splits"][0]["num_examples"] == len(seg)
    card = (segmentation_output / "README.md").read_text(encoding="utf-8")
    assert all(f"| {i} | {name} |" in card for i, name in enumerate(VOC.labels))


def test_validate_accepts_it_and_finds_a_damaged_label(segmentation_output, tmp_path):
    assert validate_output(str(segmentation_output)) == []
    out = copy_output(segmentation_output, tmp_path / "out")
    (out / "id2label.json").write_text(json.dumps({"0": "background", "1": "cat"}))
    assert {p.kind for p in validate_output(str(out))} == {"id2label"}


def test_rerun_changes_nothing(segmentation_output, tmp_path, run_cli):
    out = copy_output(segmentation_output, tmp_path / "out")
    argv = ["run", "--prompts", str(out.parent / "prompts.txt"), "--output", str(out), *SEGMENTATION_ARGS]
    assert run_cli(*argv)[0] == 0  # the copy's run.json takes its new paths
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(*argv)
    assert code == 0, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert (out / "segmentation" / "train-00001-of-00002.parquet") in before


def test_no_refine_append_prompt_and_webdataset(built_output):
    out = built_output(SEGMENTATION_PROMPTS[:2], *FAST_ARGS, "--classes", "voc", "--no-refine", "--append-class-prompt", "--format", "parquet,webdataset")
    rows = list(load_dataset(str(out), split="train"))
    assert all(c["agreement"] is None for r in rows for c in r["classes"])
    first = next(r for r in rows if r["prompt"] == "a dog sleeping on a couch")
    assert first["tokens"][-3:] == [";", "dog", "sofa"]  # generated from "prompt; dog sofa"
    assert [len(c["spans"]) for c in first["classes"]] == [2, 2]
    import webdataset as wds

    samples = list(wds.WebDataset(str(out / "wds" / "train-00000-of-00001.tar"), shardshuffle=False))
    assert all({"label.png", "class_maps.npy"} <= set(s) for s in samples)
    meta = json.loads(samples[0]["json"])
    assert [c["name"] for c in meta["classes"]] == [c["name"] for c in rows[0]["classes"]]
    assert PILImage.open(io.BytesIO(samples[0]["label.png"])).mode == "L"
    assert validate_output(str(out)) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--refine"], "--refine needs --classes"),
        (["--label-threshold", "0.5"], "--label-threshold needs --classes"),
        (["--classes", "nope.txt"], "--classes 'nope.txt': no such file"),
        (["--classes", "voc", "--ignore-below", "0.7"], "--ignore-below 0.7 is above --label-threshold 0.4"),
        (["--classes", "voc", "--refine-factor", "3"], "--refine-factor"),
        (["--classes", "voc", "--format", "webdataset"], "use --format parquet,webdataset"),
    ],
)
def test_flag_errors_are_one_line(args, message, run_cli, write_corpus, tmp_path):
    corpus = write_corpus(["a dog"])
    code, out, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_class_files_are_one_line(run_cli, write_corpus, tmp_path):
    corpus = write_corpus(["a dog"])
    bad = tmp_path / "classes.txt"
    bad.write_text("dog\ncat\ndog\n")
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--classes", str(bad))
    assert code == 2 and "repeats line 1" in err and err.count("\n") == 1, err
    bad.write_bytes(b"\xff\xfe\x00dog")
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--classes", str(bad))
    assert code == 2 and err.count("\n") == 1, err
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--classes", str(tmp_path))
    assert code == 2 and "is not a file" in err, err

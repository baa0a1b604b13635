"""examples/train_segformer.py in its reduced mode (tiny random SegFormer, small images, few steps):
the loss goes down on a fixed batch, the results JSON carries mIoU both ways, held-out splits are
chosen as documented, and it runs on a real ``run --classes`` output."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from tests.conftest import load_example
from transforms.training import collate, segmentation_dataset, segmentation_transforms

ID2LABEL = {"0": "background", "1": "cat", "2": "dog"}
COLOURS = {1: (220, 40, 40), 2: (40, 40, 220)}
SIZE = 32
REDUCED = ["--image-size", "32", "--batch-size", "4", "--learning-rate", "3e-3", "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("train_segformer")


def segmentation_rows(n: int, seed: int) -> Dataset:
    """Learnable rows: grey noise with a red (cat) or blue (dog) rectangle labelled by colour."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"id": [], "prompt": [], "image": [], "label": [], "classes": []}
    for index in range(n):
        image = rng.integers(90, 160, (SIZE, SIZE, 3)).astype(np.uint8)
        label = np.zeros((SIZE, SIZE), np.uint8)
        cls = 1 + index % 2
        top, left = rng.integers(0, SIZE // 2, 2)
        label[top : top + SIZE // 2, left : left + SIZE // 2] = cls
        label[top, left : left + SIZE // 2] = 255  # an ignored edge, as the label recipe leaves
        image[label == cls] = COLOURS[cls]
        columns["id"].append(f"{seed}-{index}")
        columns["prompt"].append(f"a photo of a {ID2LABEL[str(cls)]}")
        columns["image"].append(PILImage.fromarray(image))
        columns["label"].append(PILImage.fromarray(label, mode="L"))
        columns["classes"].append([ID2LABEL[str(cls)]])
    features = Features({"id": Value("string"), "prompt": Value("string"), "image": Image(), "label": Image(), "classes": List(Value("string"))})
    return Dataset.from_dict(columns, features=features)


CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*.parquet
- config_name: segmentation
  data_files:
{segmentation}
---
# synthetic segmentation output
"""


def write_output(root: Path, rows: int = 12, validation: int = 0) -> Path:
    """An output-like folder: default and segmentation configs declared in README.md, id2label.json.
    Give each its own folder name: datasets caches a local folder by its name and card only."""
    train = segmentation_rows(rows, seed=0)
    (root / "data").mkdir(parents=True)
    (root / "segmentation").mkdir()
    train.select_columns(["id", "prompt", "image"]).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    train.to_parquet(str(root / "segmentation" / "train-00000-of-00001.parquet"))
    splits = [("train", "segmentation/*.parquet")]
    if validation:
        segmentation_rows(validation, seed=1).to_parquet(str(root / "segmentation" / "validation-00000-of-00001.parquet"))
        splits = [("train", "segmentation/train-*.parquet"), ("validation", "segmentation/validation-*.parquet")]
    (root / "README.md").write_text(CARD.format(segmentation="\n".join(f"  - split: {name}\n    path: {path}" for name, path in splits)), encoding="utf-8")
    (root / "id2label.json").write_text(json.dumps(ID2LABEL), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return write_output(tmp_path_factory.mktemp("segformer") / "synthetic")


def test_loss_goes_down_on_a_fixed_batch(example):
    model = example.build_model({int(k): v for k, v in ID2LABEL.items()}, seed=0)
    data = segmentation_dataset(segmentation_rows(4, seed=0), transforms=segmentation_transforms(SIZE, train=False))
    batch = collate([data[k] for k in range(4)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = [example.train_step(model, optimizer, batch, "cpu") for _ in range(12)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert min(losses[-3:]) < min(losses[:3]), losses


def test_reduced_mode_writes_results_with_miou(example, output, tmp_path, caplog):
    caplog.set_level("INFO", logger="train_segformer")
    target = tmp_path / "results.json"
    arguments = ["--max-steps", "5", "--validation-fraction", "0.25", "--json", str(target), "--save", str(tmp_path / "model")]
    results = example.main([str(output), *REDUCED, *arguments])
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["id2label"] == ID2LABEL and saved["semantic_loss_ignore_index"] == 255
    assert json.loads(target.read_text()) == json.loads(json.dumps(results))
    assert results["steps"] == 5 and len(results["losses"]) == 5
    assert [e["steps"] for e in results["epochs"]] == [3, 2]  # 9 training rows in batches of 4
    assert results["train_rows"] == 9 and results["held_out_rows"] == 3 and "0.25 of train" in results["held_out"]
    included, excluded = results["metrics"]["background_included"], results["metrics"]["background_excluded"]
    assert set(included["per_category_iou"]) == {"background", "cat", "dog"}
    assert set(excluded["per_category_iou"]) == {"cat", "dog"}
    assert 0 <= included["mean_iou"] <= 1 and results["mean_iou"] == included["mean_iou"]
    assert 0 <= included["overall_accuracy"] <= 1
    assert any("epoch 2/2" in r.getMessage() for r in caplog.records)


def test_held_out_split_is_deterministic_and_validation_wins(example, output, tmp_path):
    first = example.load_splits(str(output), "segmentation", 0.25, seed=3)
    again = example.load_splits(str(output), "segmentation", 0.25, seed=3)
    assert first[1]["id"] == again[1]["id"] and not set(first[1]["id"]) & set(first[0]["id"])
    with_validation = write_output(tmp_path / "with-validation", rows=6, validation=2)
    train, held_out, source = example.load_splits(str(with_validation), "segmentation", 0.25, seed=3)
    assert (len(train), len(held_out), source) == (6, 2, "validation")
    checkpoint = tmp_path / "checkpoint"  # --model: a checkpoint of other labels gets a new head
    example.build_model({0: "background", 1: "sky"}).save_pretrained(checkpoint)
    results = example.main([str(with_validation), *REDUCED, "--epochs", "1", "--background", "exclude", "--model", str(checkpoint)])
    assert results["steps"] == 2 and results["held_out"] == "validation" and results["model"] == str(checkpoint)
    assert results["mean_iou"] == results["metrics"]["background_excluded"]["mean_iou"]


def test_reload_reads_a_folder_rewritten_in_place(example, tmp_path):
    root = write_output(tmp_path / "rewritten", rows=4)
    assert sum(map(len, example.load_splits(str(root), "segmentation", 0.25, seed=0)[:2])) == 4
    shutil.rmtree(root)
    write_output(root, rows=8)  # same name, same card: datasets' cache still holds the 4 rows
    assert sum(map(len, example.load_splits(str(root), "segmentation", 0.25, seed=0)[:2])) == 4
    assert sum(map(len, example.load_splits(str(root), "segmentation", 0.25, seed=0, reload=True)[:2])) == 8


def test_missing_id2label_is_one_line(example, output, tmp_path):
    with pytest.raises(SystemExit, match="no .*id2label.json"):
        example.load_id2label(str(tmp_path))
    with pytest.raises(SystemExit, match="must name labels 0..K"):
        (tmp_path / "id2label.json").write_text('{"1": "cat"}')
        example.load_id2label(str(tmp_path))


def test_on_a_real_classes_output(example, segmentation_output, tmp_path):
    """The reduced mode on ``daam-datasets run --classes voc`` (tiny model): 5 labelled rows."""
    results = example.main([str(segmentation_output), "--image-size", "32", "--batch-size", "2", "--max-steps", "2",
                            "--validation-fraction", "0.4", "--json", str(tmp_path / "r.json")])
    id2label = json.loads((segmentation_output / "id2label.json").read_text())
    assert results["id2label"] == id2label and len(id2label) == 21
    assert results["steps"] == 2 and all(math.isfinite(x) for x in results["losses"])
    assert results["train_rows"] + results["held_out_rows"] == 5
    assert set(results["metrics"]["background_included"]["per_category_iou"]) == set(id2label.values())

"""examples/train_segformer.py --colour-world in its reduced mode, on an untrained colour-world
folder: two SegFormers (pseudo-masks, true masks) scored on held-out true masks, side by side."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from tests.conftest import load_example

REDUCED = ["--train-images", "6", "--test-images", "3", "--image-size", "32", "--batch-size", "3",
           "--max-steps", "3", "--learning-rate", "3e-3", "--seed", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("train_segformer")


@pytest.fixture(scope="module")
def model_folder(untrained_colour_world_folder):
    return untrained_colour_world_folder


def _is_miou(value):
    return value is None or (isinstance(value, float) and 0.0 <= value <= 1.0)


def test_colour_world_reduced_mode(example, model_folder, tmp_path, capsys):
    out = tmp_path / "cw.json"
    results = example.main(["--colour-world", "--colour-world-model", str(model_folder), *REDUCED, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["mode"] == "colour-world" and results["train_images"] == 6 and results["test_images"] == 3
    assert results["id2label"] == {"0": "background", "1": "red", "2": "green", "3": "blue", "4": "yellow"}
    for kind in ("pseudo", "truth"):
        run = results["segformer"][kind]
        assert run["steps"] == 3 and len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])
        for way in ("background_included", "background_excluded"):
            assert _is_miou(results["held_out_miou"][kind][way])
            assert results["held_out_miou"][kind][way] == run["metrics"][way]["mean_iou"]
        assert set(run["metrics"]["background_included"]["per_category_iou"]) == {"background", "red", "green", "blue", "yellow"}
    assert results["held_out_miou"]["pseudo"]["background_included"] is not None
    assert results["held_out_miou"]["truth"]["background_included"] is not None
    for split in ("train", "held_out"):
        for way in ("background_included", "background_excluded"):
            assert _is_miou(results["pseudo_mask_miou"][split][way]["mean_iou"])
    assert 0.0 < results["labelled_fraction"]["pseudo"] <= 1.0 and 0.0 < results["labelled_fraction"]["truth"] <= 1.0
    example.print_colour_world(results)
    printed = capsys.readouterr().out
    assert "pseudo masks" in printed and "truth masks" in printed and "pseudo-masks vs truth (train)" in printed


def test_mode_arguments_are_checked(example):
    with pytest.raises(SystemExit):
        example.parse_args(["some/dataset", "--colour-world"])
    with pytest.raises(SystemExit):
        example.parse_args([])
    assert example.parse_args(["--colour-world"]).image_size == 64
    assert example.parse_args(["out/voc"]).image_size == 256


@pytest.mark.parametrize("world, recipe, expected", [
    ("sa", ["--refine-factor", "1", "--refine-power", "1", "--label-threshold", "0.4"],
     {"label_maps": "daam", "refine": True, "refine_factor": 1, "power": 1, "threshold": 0.4, "ignore_low": 0.4}),
    ("dit", ["--label-maps", "concept"], {"label_maps": "concept"}),
])
def test_other_worlds_and_label_recipes(example, untrained_colour_world_sa_folder, untrained_colour_world_dit_folder,
                                        world, recipe, expected):
    folder = untrained_colour_world_sa_folder if world == "sa" else untrained_colour_world_dit_folder
    results = example.main(["--colour-world", "--colour-world-model", str(folder), *REDUCED, *recipe])
    assert results["generation"]["label_recipe"] == expected
    assert results["train_images"] == 6 and _is_miou(results["held_out_miou"]["pseudo"]["background_included"])


def test_a_recipe_the_world_cannot_take_is_one_error(example, model_folder):
    with pytest.raises(SystemExit, match="no self-attention"):
        example.main(["--colour-world", "--colour-world-model", str(model_folder), *REDUCED, "--refine-factor", "1"])
    with pytest.raises(SystemExit):
        example.parse_args(["--colour-world", "--refine-power", "2"])

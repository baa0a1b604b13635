"""``daam-datasets run`` on a colour-world model folder: the same tracer, writer and readers as on
Stable Diffusion; its family's limits refused in one line; unknown words become failure records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_dataset

from transforms.models.family import COLOUR_WORLD, SD_GUIDANCE, default_guidance, family_of

PROMPTS = ["a red circle and a blue square", "a green triangle and a yellow circle", "a purple circle and a red square"]


@pytest.fixture(scope="module")
def model_folder(untrained_colour_world_folder):
    return untrained_colour_world_folder


@pytest.fixture(scope="module")
def output(model_folder, tmp_path_factory):
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("cw-run")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = ["run", "--prompts", str(root / "prompts.txt"), "--output", str(root / "out"), "--model", str(model_folder),
            "--classes", "colours", "--no-refine", "--steps", "3", "--max-failure-rate", "0.5"]
    assert main(args) == 0
    return root / "out"


def test_family_and_default_guidance(model_folder):
    assert family_of(str(model_folder)).name == COLOUR_WORLD
    assert default_guidance(str(model_folder)) == default_guidance("colour-world") == 1.0
    assert default_guidance("tiny") == SD_GUIDANCE


def test_rows_have_colour_maps_and_classes(output):
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert set(rows) == set(PROMPTS[:2])
    row = rows[PROMPTS[0]]
    assert row["image"].size == (32, 32) and row["tokens"] == PROMPTS[0].split()
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    assert maps.shape == (7, 16, 16) and np.isfinite(maps).all() and (maps >= 0).all()
    assert [c["name"] for c in row["classes"]] == ["red", "blue"]
    settings = json.loads((output / "run.json").read_text())["settings"]
    assert settings["generation"]["guidance_scale"] == 1.0
    assert len(load_dataset(str(output), "segmentation", split="train")) == 2


def test_unknown_word_is_a_failure_record_naming_it(output):
    [line] = (output / "_failures").glob("train-*.jsonl")
    [failure] = [json.loads(x) for x in line.read_text().splitlines()]
    assert failure["prompt"] == PROMPTS[2] and "unknown word 'purple'" in failure["message"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--classes", "colours", "--refine"], "this colour-world model has no self-attention to refine class maps with: add --no-refine"),
        (["--height", "64"], "colour-world makes 32x32 images"),
        (["--scheduler", "ddim"], "--scheduler ddim: colour-world samples with its own DDIM"),
    ],
)
def test_family_limits_are_one_line(model_folder, args, message, run_cli, write_corpus, tmp_path):
    corpus = write_corpus(PROMPTS[:1])
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--model", str(model_folder), *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_evaluate_reports_against_the_truth(model_folder, run_cli, tmp_path):
    code, out, err = run_cli("evaluate", "--model", str(model_folder), "--n", "1", "--no-baseline", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["images"] == 12 and 0 <= result["colour_correct"] <= 1  # one image per held-out prompt
    assert out.splitlines()[0].split()[-1] == "12"


def test_evaluate_refuses_a_model_without_known_truth(run_cli):
    code, _, err = run_cli("evaluate", "--model", "tiny", "--n", "1")
    assert code == 2 and "only the colour worlds (colour-world, colour-world-sa, colour-world-dit) have a known truth" in err
    assert err.count("\n") == 1, err


def test_evaluate_leaderboard_writes_table_json_and_plot(untrained_colour_world_sa_folder, run_cli, tmp_path):
    code, out, err = run_cli("evaluate", "--leaderboard", "--worlds", str(untrained_colour_world_sa_folder), "--n", "1",
                             "--json", str(tmp_path / "board.json"), "--plot", str(tmp_path / "board.png"))
    assert code == 0, err
    board = json.loads((tmp_path / "board.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    [world] = board["worlds"].values()
    assert world["images"] == 12 and any(r["method"].startswith("DAAM + refine") for r in world["rows"])
    assert (tmp_path / "board.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| DAAM | 16x16 | all |" in out and "best label recipe" in out


@pytest.mark.parametrize("args, message", [
    (["--plot", "x.png"], "--worlds and --plot go with --leaderboard"),
    (["--leaderboard", "--worlds", "tiny"], "only the colour worlds"),
])
def test_evaluate_flags_refused_in_one_line(run_cli, args, message):
    code, _, err = run_cli("evaluate", "--n", "1", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err

"""colour-world evaluation: the image checker on exact scenes, IoU, re-noised maps, the report."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from transforms.colour_world.evaluate import (
    _colour_ious,
    centre_disc,
    check_image,
    evaluate,
    iou,
    largest_component,
    renoise_maps,
)
from transforms.colour_world.pipeline import ColourWorldPipeline
from transforms.colour_world.scenes import ALL_PROMPTS, HELD_OUT_PROMPTS, render

KEYS = {
    "images", "both_colours_present", "colour_correct", "objects_scored", "tau", "steps", "guidance_scale",
    "colour_miou", "colour_miou_minmax", "noun_miou", "whole_image_miou", "centre_disc_miou",
    "colour_hotter_on_own_object", "renoise_colour_miou", "baseline_colour_miou",
    "pseudo_mask_miou", "pseudo_mask_miou_no_background",
}


@pytest.fixture(scope="module")
def pipe(untrained_colour_world) -> ColourWorldPipeline:
    return untrained_colour_world


def test_checker_accepts_exact_scenes() -> None:
    rng = random.Random(5)
    for prompt in ALL_PROMPTS[::9]:
        image, masks = render(prompt, rng)
        present, correct, truths = check_image(image, prompt)
        assert present and correct
        np.testing.assert_array_equal(truths, masks)
    image, _ = render(ALL_PROMPTS[0], rng)
    assert check_image(np.zeros_like(image), ALL_PROMPTS[0])[:2] == (False, False)


def test_iou_and_components() -> None:
    a = np.zeros((4, 4), bool)
    a[0, :2] = True
    a[3, :] = True
    assert largest_component(a).sum() == 4
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0 and math.isnan(iou(~np.ones_like(a), ~np.ones_like(a)))
    assert centre_disc().sum() == pytest.approx(math.pi * 100, rel=0.05)


def test_renoise_maps_on_exact_scenes(pipe: ColourWorldPipeline) -> None:
    rng = random.Random(3)
    scenes = [render(p, rng) for p in HELD_OUT_PROMPTS[:3]]
    maps = renoise_maps(pipe, np.stack([s[0] for s in scenes]), [p.text for p in HELD_OUT_PROMPTS[:3]], seed=0, steps=2)
    assert maps.shape == (3, 9, 16, 16) and torch.isfinite(maps).all() and (maps >= 0).all()
    ious = _colour_ious(maps[0], [2, 6], scenes[0][1], 0.4)
    assert len(ious) == 2 and all(0 <= v <= 1 for v in ious)


def test_reduced_evaluate_report(pipe: ColourWorldPipeline) -> None:
    result = evaluate(pipe, HELD_OUT_PROMPTS[:2], per_prompt=1, steps=2, baseline=pipe)
    assert set(result) == KEYS
    assert result["images"] == 2 and result["steps"] == 2
    for key in KEYS - {"images", "objects_scored", "tau", "steps", "guidance_scale"}:
        assert math.isnan(result[key]) or 0 <= result[key] <= 1, key
    assert 0 <= result["pseudo_mask_miou"] <= 1  # scored on every image, correct colours or not


def test_shipped_model_scores_objects_above_the_baselines() -> None:
    """The shipped weights, a few held-out images at the full 20 steps: objects get scored and the
    colour words beat the whole-image baseline (the trained model's maps mean something)."""
    from transforms.models.loading import ModelSpec, load_pipeline

    pipe = load_pipeline(ModelSpec("colour-world", device="cpu"))
    result = evaluate(pipe, HELD_OUT_PROMPTS[:4], per_prompt=2)
    assert result["images"] == 8 and result["objects_scored"] > 0
    assert result["colour_miou"] > result["whole_image_miou"]
    assert 0 < result["pseudo_mask_miou"] <= 1

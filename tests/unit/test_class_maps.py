"""Class maps, self-attention refinement, the label rule and per-class quality on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.attribution.class_maps import (
    IGNORE,
    class_heat,
    class_maps,
    class_quality,
    is_flat,
    label_map,
    label_rule,
    per_class_min_max,
    refine,
    segment_sample,
)
from transforms.attribution.classes import ClassMatch


def match(label: int, tokens: tuple[int, int]) -> ClassMatch:
    return ClassMatch(label=label, name=f"c{label}", text=f"c{label}", word_span=tokens, token_span=tokens)


def block_affinity(grid: tuple[int, int], blocks: torch.Tensor) -> torch.Tensor:
    """Row-stochastic affinity spreading every pixel uniformly over the pixels of its block."""
    ids = blocks.reshape(-1)
    same = (ids[:, None] == ids[None, :]).float()
    return same / same.sum(1, keepdim=True)


def test_class_map_is_the_mean_of_all_matches_tokens():
    token_maps = torch.arange(5 * 2 * 2, dtype=torch.float32).reshape(5, 2, 2)
    labels, maps = class_maps(token_maps, [match(7, (1, 3)), match(2, (0, 1)), match(7, (4, 5))])
    assert labels == [7, 2]
    torch.testing.assert_close(maps[0], token_maps[[1, 2, 4]].mean(0))
    torch.testing.assert_close(maps[1], token_maps[0])
    labels, maps = class_maps(token_maps, [])
    assert labels == [] and maps.shape == (0, 2, 2)


def test_identity_affinity_only_normalises():
    maps = torch.rand(3, 4, 6) * 5
    out = refine(maps, torch.eye(24), (4, 6), power=4)
    torch.testing.assert_close(out, per_class_min_max(maps))


def test_block_affinity_spreads_a_point_over_its_block():
    blocks = torch.zeros(4, 4, dtype=torch.long)
    blocks[:, 2:] = 1  # left half, right half
    affinity = block_affinity((4, 4), blocks)
    point = torch.zeros(1, 4, 4)
    point[0, 1, 0] = 3.0
    for power in (1, 3):
        out = refine(point, affinity, (4, 4), power)
        expected = torch.zeros(1, 4, 4)
        expected[0, :, :2] = 1 / 8 / (1 + 1e-8)
        torch.testing.assert_close(out, expected)


def test_power_is_repeated_matrix_vector_products():
    torch.manual_seed(0)
    affinity = torch.rand(16, 16).double()
    affinity /= affinity.sum(1, keepdim=True)
    maps = torch.rand(2, 4, 4).double()
    out = refine(maps, affinity, (4, 4), power=4)
    vectors = per_class_min_max(maps.float()).double().reshape(2, 16).T
    expected = (torch.linalg.matrix_power(affinity, 4) @ vectors).T.reshape(2, 4, 4)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_refine_downsamples_to_the_grid_and_back():
    maps = torch.zeros(1, 8, 8)
    maps[0, :4, :4] = 1.0  # top-left quarter: exactly the top-left 2x2 cells of a 4x4 grid
    out = refine(maps, torch.eye(16), (4, 4), power=2)
    assert out.shape == (1, 8, 8)
    assert out.min() >= 0 and out.max() <= 1
    assert out[0, :3, :3].min() > 0.99 and out[0, 5:, 5:].max() < 1e-6
    with pytest.raises(ValueError, match="does not fit a 3x3 grid"):
        refine(maps, torch.eye(16), (3, 3), power=1)


def test_label_rule_threshold_and_ignore_band():
    scores = torch.tensor([[[0.7, 0.6, 0.55, 0.5, 0.49, 0.0]], [[0.1, 0.2, 0.1, 0.1, 0.1, 0.0]]])
    labels = label_rule(scores, [4, 9], threshold=0.6, ignore_low=0.5)
    assert labels.dtype == np.uint8 and labels.shape == (1, 6)
    assert labels.tolist() == [[4, 4, IGNORE, IGNORE, 0, 0]]
    scores[1, 0, 1] = 0.9  # class 9 wins there
    assert label_rule(scores, [4, 9], 0.6, 0.5)[0, 1] == 9
    assert label_rule(scores, [4, 9], 0.6, 0.6)[0, 2] == 0  # empty band: no ignore


def test_label_values_are_background_classes_or_ignore():
    torch.manual_seed(1)
    maps = torch.rand(3, 8, 8)
    labels = label_map(maps, [1, 2, 3], (32, 32), 0.6, 0.5)
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, IGNORE}
    assert (label_map(maps[:0], [], (32, 32), 0.6, 0.5) == 0).all()
    assert class_heat(maps, (32, 32)).shape == (3, 32, 32)


def hand_maps() -> torch.Tensor:
    raw = torch.zeros(2, 4, 4)
    raw[0, 0] = 1.0
    raw[0, 1] = 0.55  # in the ignore band after min-max
    raw[1, 2] = 2.0
    return raw


def test_quality_on_hand_made_maps():
    raw = hand_maps()
    labelled, quality = class_quality(raw, None, [5, 9], (4, 4), 0.6, 0.5)
    assert labelled.tolist() == [[5] * 4, [IGNORE] * 4, [9] * 4, [0] * 4]
    first, second = quality
    assert (first.label, first.peak, first.area, first.ignore_fraction, first.agreement) == (5, 1.0, 0.25, 0.25, None)
    assert (second.label, second.peak, second.area, second.ignore_fraction, second.agreement) == (9, 2.0, 0.25, 0.0, None)


def test_agreement_is_iou_between_unrefined_and_refined_labels():
    raw = hand_maps()
    refined = raw.clone()
    refined[0, :2] = 1.0  # refinement grows class 5 over the ignore band
    labelled, quality = class_quality(raw, refined, [5, 9], (4, 4), 0.6, 0.5)
    assert labelled.tolist() == [[5] * 4, [5] * 4, [9] * 4, [0] * 4]
    assert [q.agreement for q in quality] == [0.5, 1.0]
    assert quality[0].peak == 1.0 and quality[0].area == 0.5  # peak of the raw map, area of the refined labels


def test_segment_sample_without_classes():
    seg = segment_sample("a tree", [], torch.rand(2, 8, 8), (64, 64), 0.6, 0.5, torch.eye(16), (4, 4), 4)
    assert seg.labels == [] and seg.quality == [] and seg.matches == []
    assert seg.class_maps.shape == (0, 8, 8) and seg.class_maps.dtype == np.float32
    assert seg.label_map.shape == (64, 64) and seg.label_map.dtype == np.uint8 and not seg.label_map.any()


def test_segment_sample_refines_and_labels():
    token_maps = torch.zeros(3, 4, 4)
    token_maps[1, 0, 0] = 1.0
    blocks = torch.zeros(4, 4, dtype=torch.long)
    blocks[2:] = 1
    seg = segment_sample("p", [match(3, (1, 2))], token_maps, (4, 4), 0.6, 0.5, block_affinity((4, 4), blocks), (4, 4), 2)
    assert seg.labels == [3]
    assert (seg.label_map[:2] == 3).all() and (seg.label_map[2:] == 0).all()
    plain = segment_sample("p", [match(3, (1, 2))], token_maps, (4, 4), 0.6, 0.5)
    assert plain.quality[0].agreement is None and (plain.label_map == 3).sum() == 1
    assert seg.quality[0].agreement == pytest.approx(1 / 8)


def test_a_flat_class_map_labels_no_pixel():
    noise = torch.linspace(0, 1, 16).reshape(4, 4) * 1e-6
    flat, shaped = torch.full((4, 4), 0.5) + noise, torch.zeros(4, 4)
    shaped[1, 1] = 1.0
    assert is_flat(flat) and is_flat(torch.zeros(4, 4)) and not is_flat(shaped)
    heat = class_heat(torch.stack([flat, shaped]), (8, 8))
    assert not heat[0].any() and heat[1].max() > 0.99
    labels = label_rule(heat, [3, 5], threshold=0.6, ignore_low=0.5)
    assert set(np.unique(labels)) <= {0, 5, 255} and (labels == 5).any()

"""Export splits: a row's split depends on its id alone (any order, any other rows), about the
asked fraction goes to validation, and a larger fraction only moves rows into validation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from pipeline.errors import ExportError
from pipeline.export.plan import ExportPlan
from pipeline.export.splits import TRAIN, VALIDATION, split_of, split_point

IDS = [f"row-{i}" for i in range(4000)]


def test_the_fraction_is_about_what_was_asked():
    for fraction in (0.05, 0.1, 0.5):
        share = sum(split_of(i, fraction) == VALIDATION for i in IDS) / len(IDS)
        assert abs(share - fraction) < 0.03, fraction
    assert {split_of(i, 0.0) for i in IDS} == {TRAIN}


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=60, unique=True), st.randoms())
def test_the_plan_does_not_depend_on_row_order(ids, rng):
    shuffled = list(ids)
    rng.shuffle(shuffled)
    first = {row.id: (row.stem, row.split) for row in ExportPlan.build(ids, 0.3).rows}
    second = {row.id: (row.stem, row.split) for row in ExportPlan.build(shuffled, 0.3).rows}
    assert first == second
    alone = {i: ExportPlan.build([i], 0.3).rows[0].split for i in ids}  # nor on the other rows
    assert alone == {i: split for i, (_, split) in first.items()}


@given(st.text(min_size=1), st.floats(0, 0.5), st.floats(0, 0.5))
def test_a_larger_fraction_only_moves_rows_into_validation(row_id, a, b):
    low, high = sorted((a, b))
    if split_of(row_id, low) == VALIDATION:
        assert split_of(row_id, high) == VALIDATION
    assert 0.0 <= split_point(row_id) < 1.0


def test_known_points_stay_put():
    """The split of a published dataset must not change with a release: pinned values."""
    assert split_of("822dd9673df10096", 0.5) == VALIDATION and split_of("d805743ab1fbe6ff", 0.5) == TRAIN
    assert round(split_point("822dd9673df10096"), 3) == 0.125


def test_the_plan_counts_and_sorts_splits():
    ids = random.Random(0).sample(IDS, 200)
    plan = ExportPlan.build(ids, 0.25)
    assert plan.count(TRAIN) + plan.count(VALIDATION) == 200 and plan.splits() == [TRAIN, VALIDATION]
    stems = [row.stem for row in plan.in_split(VALIDATION)]
    assert stems == sorted(stems) and len(stems) == plan.count(VALIDATION)
    assert ExportPlan.build(ids, 0).splits() == [TRAIN]


def test_a_repeated_id_is_refused():
    with pytest.raises(ExportError, match="OUTPUT: cannot export the segmentation config: the id 'a' is repeated"):
        ExportPlan.build(["a", "b", "a"], 0.1)

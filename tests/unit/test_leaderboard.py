"""The evaluate leaderboard: layer/step subsets of one run equal runs that trace only them, the
defaults follow the table, and a reduced leaderboard on untrained worlds has every method's row."""

from __future__ import annotations

import math

import pytest
import torch

from transforms.attribution.config import GenerationConfig, TraceConfig
from transforms.attribution.generate import generate_traced
from transforms.attribution.store import HeatMapStore
from transforms.colour_world.leaderboard import ALL, LABEL_THRESHOLDS, choose_defaults, leaderboard
from transforms.colour_world.pipeline import load_world
from transforms.colour_world.scenes import HELD_OUT_PROMPTS

PROMPT = "a photo of a cat on a red sofa"


@pytest.mark.parametrize("layers, glob, bins, step_range", [
    ("up", "up_blocks.*", [1], (2, 4)),
    ("down", "down_blocks.*", [0], (0, 2)),
    ("all", None, [0, 1], None),
])
def test_subset_maps_equal_a_run_tracing_only_them(tiny_pipe, one_torch_thread, layers, glob, bins, step_range):
    store = HeatMapStore(TraceConfig(layers="all", per_timestep=2))
    [whole] = generate_traced(tiny_pipe, [PROMPT], [3], GenerationConfig(steps=4, height=64, width=64), store=store)
    names = None if glob is None else [n for n in store.sums if n.startswith(glob.rstrip("*"))]
    subset = store.subset_maps(names, bins)
    trace = TraceConfig(layers="all" if glob is None else glob, step_range=step_range)
    [alone] = generate_traced(tiny_pipe, [PROMPT], [3], GenerationConfig(steps=4, height=64, width=64, trace=trace))
    # equal up to float order: untraced layers run diffusers' own kernel in the second run
    torch.testing.assert_close(subset[0, : len(alone.heat_map.maps)], alone.heat_map.maps, rtol=1e-4, atol=1e-5)
    assert whole.heat_map.maps.shape == alone.heat_map.maps.shape


def test_subset_maps_refuse_unknown_layers_and_bins_without_bins(tiny_pipe, one_torch_thread):
    store = HeatMapStore(TraceConfig(layers="all"))
    generate_traced(tiny_pipe, [PROMPT], [3], GenerationConfig(steps=2, height=64, width=64), store=store)
    with pytest.raises(ValueError, match="none of the layers"):
        store.subset_maps(["no.such.layer"])
    with pytest.raises(RuntimeError, match="no time bins"):
        store.subset_maps(None, [0])


def _row(method, best, threshold=0.6, layers=ALL, steps=ALL):
    return {"method": method, "layers": layers, "steps": steps, "colour_miou": 0.5, "pseudo_mask_miou": best - 0.05,
            "pseudo_mask_miou_best": best, "best_threshold": threshold}


def test_defaults_take_the_best_recipe_run_offers():
    worlds = {
        "sa": {"rows": [_row("DAAM", 0.55), _row("DAAM + refine (factor 2, power 1)", 0.66, 0.5),
                        _row("DAAM", 0.9, layers="8x8"),  # a layer subset is not a run --classes recipe
                        _row("baseline: whole image", math.nan)]},
        "dit": {"rows": [_row("DAAM", 0.6, 0.4), _row("ConceptAttention, class names", 0.58)]},
    }
    defaults = choose_defaults(worlds)
    assert defaults["sa"]["refine"] and defaults["sa"]["refine_factor"] == 2 and defaults["sa"]["refine_power"] == 1
    assert defaults["sa"]["label_threshold"] == 0.5 and defaults["sa"]["label_maps"] == "daam"
    assert defaults["dit"] == {"method": "DAAM", "label_maps": "daam", "refine": False, "label_threshold": 0.4,
                               "pseudo_mask_miou": 0.6, "daam_pseudo_mask_miou_at_default": pytest.approx(0.55)}


@pytest.fixture(scope="module")
def board(untrained_colour_world_sa_folder, untrained_colour_world_dit_folder, one_torch_thread):
    pipes = {"sa": load_world(untrained_colour_world_sa_folder), "dit": load_world(untrained_colour_world_dit_folder)}
    return leaderboard(pipes, per_prompt=1, batch=12)


def test_reduced_leaderboard_has_every_method(board):
    sa = {(r["method"], r["layers"], r["steps"]) for r in board["worlds"]["sa"]["rows"]}
    dit = {(r["method"], r["layers"], r["steps"]) for r in board["worlds"]["dit"]["rows"]}
    for layers in ("16x16", "8x8", "down", "up"):
        assert ("DAAM", layers, ALL) in sa
    for steps in ("0-5", "5-10", "10-15", "15-20"):
        assert ("DAAM", ALL, steps) in sa and ("DAAM", ALL, steps) in dit
    assert ("DAAM + refine (factor 1, power 4)", ALL, ALL) in sa and ("DAAM + refine (factor 2, power 1)", ALL, ALL) in sa
    assert ("DAAM", "double", ALL) in dit and ("DAAM", "single", ALL) in dit
    for method in ("DAAM, text keys", "ConceptAttention, content words", "ConceptAttention, class names",
                   "paper's cross-attention baseline, class names", "paper's cross-attention baseline, content words"):
        assert (method, ALL, ALL) in dit and (method, ALL, ALL) not in sa
    assert not any(m.startswith("DAAM + refine") for m, _, _ in dit)
    for world in board["worlds"].values():
        assert world["images"] == len(HELD_OUT_PROMPTS)
        for row in world["rows"]:
            for key in ("colour_miou", "pseudo_mask_miou", "pseudo_mask_miou_best"):
                assert row[key] is None or 0.0 <= row[key] <= 1.0
            if not row["method"].startswith("baseline"):
                assert set(row["pseudo_mask_miou_by_threshold"]) == {str(t) for t in LABEL_THRESHOLDS}
    assert set(board["defaults"]) == {"sa", "dit"}


def test_run_classes_defaults_follow_the_family(untrained_colour_world_folder, untrained_colour_world_sa_folder,
                                                untrained_colour_world_dit_folder):
    from transforms.models.family import COLOUR_WORLD_SA_LABELS, LABEL_DEFAULTS, label_defaults

    assert label_defaults("tiny") == LABEL_DEFAULTS["stable-diffusion"] == label_defaults("some-org/some-model")
    assert label_defaults("tiny-sdxl") == LABEL_DEFAULTS["stable-diffusion-xl"]
    assert label_defaults("tiny-flux") == LABEL_DEFAULTS["flux"] == label_defaults(str(untrained_colour_world_dit_folder))
    assert label_defaults("tiny-sd3") == LABEL_DEFAULTS["stable-diffusion-3"]
    assert label_defaults(str(untrained_colour_world_folder)) == LABEL_DEFAULTS["colour-world"]
    assert label_defaults(str(untrained_colour_world_sa_folder)) == COLOUR_WORLD_SA_LABELS == label_defaults("colour-world-sa")
    assert not LABEL_DEFAULTS["flux"]["refine"] and LABEL_DEFAULTS["stable-diffusion"]["refine"]

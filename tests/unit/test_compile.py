"""``--compile``: the denoiser compiled in place (processor names unchanged), traced maps equal to
eager ones, and a step selection recompiles nothing (the recording processors run outside the
graph). Compiling the tiny UNet with inductor takes minutes on two cores: slow."""

from __future__ import annotations

import pytest
import torch

from transforms.attribution import GenerationConfig, generate_traced
from transforms.attribution.config import TraceConfig
from transforms.models.loading import ModelSpec, load_pipeline

CONFIG = GenerationConfig(steps=3, height=64, width=64)
PROMPTS, SEEDS = ["a photo of a red cat", "a dog"], [0, 1]


@pytest.mark.slow
def test_compiled_maps_equal_eager_maps_and_selections_do_not_recompile(tiny_pipe):
    from torch._dynamo.utils import counters

    pipe = load_pipeline(ModelSpec("tiny", device="cpu", compile=True))
    assert pipe.unet._compiled_call_impl is not None  # nn.Module.compile: compiled in place
    assert set(pipe.unet.attn_processors) == set(tiny_pipe.unet.attn_processors)
    eager = generate_traced(tiny_pipe, PROMPTS, SEEDS, CONFIG)
    compiled = generate_traced(pipe, PROMPTS, SEEDS, CONFIG)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c.heat_map.maps, e.heat_map.maps, rtol=0, atol=1e-5)
        assert abs(c.image - e.image).max() <= 1e-4
    selected = GenerationConfig(steps=3, height=64, width=64, trace=TraceConfig(step_range=(1, 2)))
    again = generate_traced(pipe, PROMPTS, SEEDS, selected)
    reference = generate_traced(tiny_pipe, PROMPTS, SEEDS, selected)
    assert counters["stats"]["unique_graphs"] == graphs  # no new graph for another step selection
    for e, c in zip(reference, again):
        torch.testing.assert_close(c.heat_map.maps, e.heat_map.maps, rtol=0, atol=1e-5)

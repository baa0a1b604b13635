"""What a trace selection leaves out runs the model's own fused processor: unselected modules keep
their original processor object, unselected steps go to it from the recording processor."""

from __future__ import annotations

from typing import Any

from diffusers.models.attention_processor import AttnProcessor2_0

from transforms.attribution import GenerationConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.config import TraceConfig
from transforms.attribution.processor import DaamCrossAttnProcessor
from transforms.attribution.store import HeatMapStore
from transforms.attribution.tracer import CrossAttentionTracer

STEPS = 3


def test_unselected_modules_keep_their_original_fused_processor(tiny_pipe):
    originals = dict(tiny_pipe.unet.attn_processors)
    tracer = CrossAttentionTracer(tiny_pipe.unet, HeatMapStore(TraceConfig(layers="down")))
    with tracer:
        inside = tiny_pipe.unet.attn_processors
    traced = set(tracer.traced_names)
    assert traced and all("down_blocks" in name for name in traced)
    for name, processor in inside.items():
        if name in traced:
            assert isinstance(processor, DaamCrossAttnProcessor) and processor.fallback is originals[name]
        else:
            assert processor is originals[name] and isinstance(processor, AttnProcessor2_0), name


def test_unselected_steps_run_the_original_processor(tiny_pipe, monkeypatch, one_torch_thread):
    calls = {"recorded": 0, "fused": 0}
    record, fused = HeatMapStore.add, AttnProcessor2_0.__call__

    def counted_add(self: HeatMapStore, *args: Any, **kwargs: Any) -> None:
        calls["recorded"] += 1
        record(self, *args, **kwargs)

    def counted_fused(self: AttnProcessor2_0, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,
                      *args: Any, **kwargs: Any) -> Any:
        calls["fused"] += encoder_hidden_states is not None  # cross-attention calls only
        return fused(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(HeatMapStore, "add", counted_add)
    monkeypatch.setattr(AttnProcessor2_0, "__call__", counted_fused)
    config = GenerationConfig(steps=STEPS, height=64, width=64, trace=TraceConfig(step_range=(0, 1)))
    generate_traced(tiny_pipe, ["a cat"], [0], config)
    cross = len(architecture_of(tiny_pipe).traced_modules(tiny_pipe.unet))
    traced = len(CrossAttentionTracer(tiny_pipe.unet, HeatMapStore(config.trace)).traced_names)
    assert 0 < traced <= cross
    assert calls["recorded"] == traced  # step 0 only, one call per traced module
    assert calls["fused"] == traced * (STEPS - 1) + (cross - traced) * STEPS

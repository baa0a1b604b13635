"""DAAM attribution core: cross-attention tracing and aggregation for diffusers pipelines.

Imports torch and diffusers only (no Beam), so it can be used on its own::

    from transforms.attribution import GenerationConfig, generate_traced
    [sample] = generate_traced(pipe, ["a cat on a mat"], seeds=[0], config=GenerationConfig(steps=20))
    cat_map = sample.heat_map.word_map("cat")                   # (64, 64) at 512 px
    cat_mask = sample.heat_map.word_mask("cat", (512, 512))     # DAAM τ = 0.4

With ``segmentation=SegmentationConfig(load_vocabulary("voc"))`` each sample also carries a
``SampleSegmentation`` (class maps refined with self-attention, a label map, per-class quality).
"""

from .affinity import AffinityStore, DaamSelfAttnProcessor, conditional_self_attention, self_attention_names
from .class_maps import (
    BACKGROUND,
    IGNORE,
    ClassQuality,
    SampleSegmentation,
    class_heat,
    class_maps,
    class_quality,
    label_map,
    label_rule,
    refine,
    segment_sample,
)
from .config import GenerationConfig, SegmentationConfig, TraceConfig
from .generate import TracedSample, generate_traced, image_seed, prompt_classes
from .heatmap import GlobalHeatMap, expand_map, min_max, normalize_rows, word_heat, word_mask
from .processor import DaamCrossAttnProcessor
from .store import HeatMapStore
from .tracer import CrossAttentionTracer
from .words import TokenizedPrompt, WordSpan, row_spans, token_merge_indices, token_spans, tokenize_prompt

__all__ = [
    "BACKGROUND",
    "IGNORE",
    "AffinityStore",
    "ClassQuality",
    "CrossAttentionTracer",
    "DaamCrossAttnProcessor",
    "DaamSelfAttnProcessor",
    "GenerationConfig",
    "GlobalHeatMap",
    "HeatMapStore",
    "SampleSegmentation",
    "SegmentationConfig",
    "TokenizedPrompt",
    "TraceConfig",
    "TracedSample",
    "WordSpan",
    "class_heat",
    "class_maps",
    "class_quality",
    "conditional_self_attention",
    "expand_map",
    "generate_traced",
    "image_seed",
    "label_map",
    "label_rule",
    "min_max",
    "normalize_rows",
    "prompt_classes",
    "refine",
    "row_spans",
    "segment_sample",
    "self_attention_names",
    "token_merge_indices",
    "token_spans",
    "tokenize_prompt",
    "word_heat",
    "word_mask",
]

"""DAAM attribution core: cross-attention tracing and aggregation for diffusers pipelines.

Imports torch and diffusers only (no Beam), so it can be used on its own::

    from transforms.attribution import GenerationConfig, generate_traced
    [sample] = generate_traced(pipe, ["a cat on a mat"], seeds=[0], config=GenerationConfig(steps=20))
    cat_map = sample.heat_map.word_map("cat")                   # (64, 64) at 512 px
    cat_mask = sample.heat_map.word_mask("cat", (512, 512))     # DAAM τ = 0.4
"""

from .config import GenerationConfig, TraceConfig
from .generate import TracedSample, generate_traced, image_seed
from .heatmap import GlobalHeatMap, expand_map, min_max, normalize_rows, word_heat, word_mask
from .processor import DaamCrossAttnProcessor
from .store import HeatMapStore
from .tracer import CrossAttentionTracer
from .words import TokenizedPrompt, WordSpan, row_spans, token_merge_indices, token_spans, tokenize_prompt

__all__ = [
    "CrossAttentionTracer",
    "DaamCrossAttnProcessor",
    "GenerationConfig",
    "GlobalHeatMap",
    "HeatMapStore",
    "TokenizedPrompt",
    "TraceConfig",
    "TracedSample",
    "WordSpan",
    "expand_map",
    "generate_traced",
    "image_seed",
    "min_max",
    "normalize_rows",
    "row_spans",
    "token_merge_indices",
    "token_spans",
    "tokenize_prompt",
    "word_heat",
    "word_mask",
]

"""The memory one traced generation needs, estimated from the model's configs before anything is
allocated, and the memory the device has. No Beam, no weights.

``estimate_generation`` counts bytes for ``images`` images per UNet call (``--batch-size`` ×
``--images-per-prompt``; the UNet batch ``N`` is twice that with classifier-free guidance), on a
latent grid of ``h × w = p`` pixels (image size / the VAE's factor):

- **weights**: parameters of the UNet and the VAE (built on the meta device: no storage) and of the
  text encoders (from their configs: SDXL has two, the second with a projection), in the run's dtype;
- **UNet activations**: the skip connections the down path keeps for the up path
  (``layers_per_block + 1`` tensors per level) plus the working set of the largest block: a
  transformer block's GEGLU feed-forward holds about ``UNET_WORK`` × channels values per pixel;
- **self-attention**: the ``N·heads·p²`` score matrices (scores and softmax, ×2), counted only
  where the attention backend materialises them — asked of torch for the device and dtype (its
  math backend does; the flash kernels of CPU and CUDA and CUDA's memory-efficient kernel do not);
- **traced cross-attention**: a traced layer's explicit baddbmm input, scores and probabilities
  plus the float32 copy the store adds, ``N·heads·p·77`` values each;
- **accumulated maps**: the float32 per-layer sums kept across steps for every traced layer,
  ``images·heads·p_layer·77`` (``K`` times that with ``--per-timestep K``: one sum per time bin),
  and their aggregation to the latent grid at the end (plus the ``K`` bins' maps);
- **self-attention affinity** (segmentation with refinement): the float32 sum of head-summed
  self-attention probabilities at the refine factor, ``images·q²`` for its grid of ``q`` pixels,
  and its average at the end (twice); while the UNet runs, the probe's ``CHUNK_ELEMENTS``-bounded
  scores and softmax (``affinity probe``); after decoding, the refinement's class scores at image
  size, raw and refined (``refinement``, ``REFINE_WORK`` values per pixel per class);
- **VAE decode**: the decoder's largest level (``VAE_WORK`` tensors of its channels per pixel), its
  mid-block attention when materialised, and the decoded images (tensor, float copy, array);
- **shard rows**: a shard's records, held until the shard is committed (token maps, the ``K``
  per-timestep maps, and PNG, twice while they are converted to Arrow);
- **kernel workspace**: the convolution library's re-laid-out copy of the largest UNet convolution
  plus a fixed ``FIXED_OVERHEAD``.

Weights, workspace, maps, affinity and shard rows add up; the UNet stage (activations +
self-attention + traced cross-attention + affinity probe), the VAE stage and the refinement never
overlap, so the largest of them counts.

Calibration (``tests/unit/test_memory.py`` checks measured <= estimate <= 20× measured): on the
built-in tiny model (CPU, 256–768 px, 1–4 images) the estimate was 2.0–2.7× the measured peak RSS
growth of a whole traced generation; on a Stable Diffusion 1.5-shaped UNet and VAE (random
weights, CPU, 256–512 px) the UNet terms were 1.6–2.1× and the VAE terms 1.5–2.1× the measured
peaks; on the built-in ``tiny-sdxl`` (two text encoders, ``text_time`` embedding; CPU, 384–768 px,
1–2 images; ``tests/unit/test_sdxl.py``) 2.2–2.8×.

Safety margin: ``require_fits`` refuses an estimate above ``HEADROOM`` (90 %) of what the device has
available (CPU: ``MemAvailable``, capped by the cgroup's limit; CUDA: ``torch.cuda.mem_get_info``'s
free memory), keeping 10 % for what is not counted (Python heap, writer buffers, other processes).
Several workers on one machine each need the estimate: the check is per worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from transforms.attribution.affinity import CHUNK_ELEMENTS
from transforms.attribution.config import GenerationConfig, SegmentationConfig, TraceConfig
from .memory_device import available_memory, cpu_available  # noqa: F401  (require_fits looks them up here)

TEXT_TOKENS = 77  # CLIP's text window: keys of every cross-attention call (SDXL: its two encoders side by side)
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # the folders' text-encoder components (SDXL has both)
STORED_TOKENS = TEXT_TOKENS - 2  # token map rows a record keeps (no start/end token)
UNET_WORK = 24  # values per pixel per channel alive in the UNet's largest block (GEGLU: 8c + 4c + 4c + norms)
SCORE_COPIES = 2  # attention scores and their softmax
TRACED_BYTES = 16  # bytes per traced score: baddbmm input, scores, probabilities (float32 at most) + store copy
VAE_WORK = 6  # tensors of the decoder's widest channels per pixel alive at its largest level (measured 4-6)
IMAGE_BYTES = 12  # per decoded value: the decoder's output, its float32 copy and the numpy array
SHARD_COPIES = 2  # records and their Arrow table at commit
REFINE_WORK = 12  # per class and pixel at image size: bicubic, min-max and stack, raw and refined (float32)
FIXED_OVERHEAD = 64 * 2**20  # allocator slack, kernel caches, the text encoder's activations
HEADROOM = 0.9  # a run may use this fraction of the available memory
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}  # uint8: --map-dtype
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


class MemoryBudgetError(ValueError):
    """A generation would not fit in the device's memory; the message is meant for the user."""


@dataclass(frozen=True)
class TracedLayer:
    """A traced cross-attention module: its latent factor and heads."""

    factor: int
    heads: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part (see the module docstring), their peak ``total``, images per UNet call."""

    parts: dict[str, int]
    total: int
    images: int = 1

    @property
    def generation(self) -> int:
        """The peak without the weights: what one generation adds to a loaded model."""
        return self.total - self.parts.get("weights", 0)

    def describe(self, largest: int = 3) -> str:
        """``about 1.2 TiB (self-attention 1.1 TiB, …)``: the total and its largest parts."""
        ranked = sorted(((v, k) for k, v in self.parts.items() if v), reverse=True)[:largest]
        return f"about {format_bytes(self.total)} ({', '.join(f'{k} {format_bytes(v)}' for v, k in ranked)})"


def format_bytes(count: float) -> str:
    """``1.2 TiB``: binary units, three significant digits."""
    unit = 0
    while count >= 1024 and unit < len(_UNITS) - 1:
        count /= 1024
        unit += 1
    return f"{count:.0f} B" if unit == 0 else f"{count:.3g} {_UNITS[unit]}"


def _per_level(value: Any, levels: int) -> list[int]:
    """A config entry given as one int or one per level, as a list of ``levels`` ints."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)] * levels


def _heads(unet: Mapping[str, Any]) -> list[int]:
    """Attention heads per level (diffusers reads ``attention_head_dim`` as heads without
    ``num_attention_heads``)."""
    given = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8
    return _per_level(given, len(unet["block_out_channels"]))


def _attention_blocks(unet: Mapping[str, Any]) -> list[tuple[str, int, int, int]]:
    """``(module prefix, level, cross-attention modules, heads)`` of each block with attention:
    down block ``i`` (level ``i``, factor ``2**i``) has ``layers_per_block`` modules, an up block
    one more, the mid block one (times ``transformer_layers_per_block``)."""
    levels = len(unet["block_out_channels"])
    per_block = _per_level(unet.get("layers_per_block", 2), levels)
    depth = _per_level(unet.get("transformer_layers_per_block") or 1, levels)
    heads = _heads(unet)
    blocks = [("down_blocks", i, per_block[i] * depth[i], heads[i])
              for i, kind in enumerate(unet.get("down_block_types", ())) if "CrossAttn" in kind]
    for j, kind in enumerate(unet.get("up_block_types", ())):
        i = levels - 1 - j
        if "CrossAttn" in kind:
            blocks.append(("up_blocks", i, (per_block[i] + 1) * depth[i], heads[i]))
    if "CrossAttn" in str(unet.get("mid_block_type", "UNetMidBlock2DCrossAttn")):
        blocks.append(("mid_block", levels - 1, depth[-1], heads[-1]))
    return blocks


def traced_layers(unet: Mapping[str, Any], trace: TraceConfig) -> list[TracedLayer]:
    """One entry per cross-attention module that a ``trace`` selection records (kinds, name globs,
    factors), from the config: the UNet built on the meta device (``trace_selection``)."""
    from transforms.trace_selection import traced, unet_modules

    return [TracedLayer(m.factor or 1, m.heads or 1) for m in traced(unet_modules(unet), trace)]


def model_factors(unet: Mapping[str, Any]) -> list[int]:
    """Latent factors at which the UNet has cross-attention (``--layers all``)."""
    return sorted({2**level for _, level, _, _ in _attention_blocks(unet)})


def segmentation_parts(
    segmentation: SegmentationConfig | None, h: int, w: int, images: int, heads: int, size: tuple[int, int]
) -> dict[str, int]:
    """Bytes of the refinement's parts (module docstring) on an ``h × w`` latent grid; ``heads``:
    the most heads of a self-attention layer at the refine factor. Empty without refinement."""
    if segmentation is None or not segmentation.refine:
        return {}
    q = _grid(h, w, segmentation.refine_factor)
    chunk_heads = min(heads, max(1, CHUNK_ELEMENTS // (images * q * q)))
    classes = min(segmentation.vocabulary.num_classes, STORED_TOKENS)
    return {
        "self-attention affinity": 2 * images * q * q * 4,
        "affinity probe": SCORE_COPIES * chunk_heads * images * q * q * 4,
        "refinement": REFINE_WORK * classes * size[0] * size[1] * 4,
    }


def attention_materialises(device: str, dtype: str, heads: int, head_dim: int) -> bool:
    """Whether torch's attention on ``device`` would build the full score matrix (math backend)
    for these shapes; asked with a two-token probe. Unknown answers count as yes."""
    try:
        from torch.nn.attention import SDPBackend

        probe = torch.zeros(1, heads, 2, head_dim, dtype=getattr(torch, dtype), device=device)
        return int(torch._fused_sdp_choice(probe, probe, probe)) == int(SDPBackend.MATH.value)
    except Exception:  # no such device here, an old torch, a backend without the query
        return True


def _grid(h: int, w: int, factor: int) -> int:
    """Pixels of the latent grid at a downsampling factor (stride-2 convolutions round up)."""
    return math.ceil(h / factor) * math.ceil(w / factor)


def _text_encoder_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of a CLIP-style text encoder from its config (embeddings, layers, final norm, and
    the text projection of a ``CLIPTextModelWithProjection``: SDXL's second encoder)."""
    d = int(config.get("hidden_size", 0))
    ff = int(config.get("intermediate_size", 4 * d))
    embeddings = (int(config.get("vocab_size", 0)) + int(config.get("max_position_embeddings", TEXT_TOKENS))) * d
    projected = any("WithProjection" in str(name) for name in config.get("architectures") or ())
    projection = d * int(config.get("projection_dim", 0)) if projected else 0
    layers = int(config.get("num_hidden_layers", 0)) * (4 * d * d + 2 * d * ff + 9 * d + ff)
    return embeddings + 2 * d + projection + layers


def _parameters(cls: Any, config: Mapping[str, Any]) -> int:
    """Parameters of a diffusers model built from ``config`` on the meta device (no storage)."""
    with torch.device("meta"):
        model = cls.from_config(dict(config))
    return sum(p.numel() for p in model.parameters())


def weight_bytes(configs: Mapping[str, Mapping[str, Any]], dtype: str) -> int:
    """Bytes of the UNet, VAE and text encoder(s) weights in ``dtype``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    count = _parameters(UNet2DConditionModel, configs["unet"]) + _parameters(AutoencoderKL, configs["vae"])
    count += sum(_text_encoder_parameters(configs.get(name) or {}) for name in TEXT_ENCODERS)
    return count * DTYPE_BYTES[dtype]


def estimate_generation(
    configs: Mapping[str, Mapping[str, Any]],
    generation: GenerationConfig,
    size: tuple[int, int],
    images: int,
    dtype: str = "float32",
    device: str = "cpu",
    rows_per_shard: int = 0,
    map_dtype: str = "float16",
    materialises: bool | None = None,
    segmentation: SegmentationConfig | None = None,
) -> MemoryEstimate:
    """Peak bytes of one traced generation of ``images`` images of ``size`` (height, width) with
    the model whose ``configs`` (``unet``, ``vae``, optional ``text_encoder`` and ``text_encoder_2``)
    are given; see the module docstring. ``materialises`` overrides the attention-backend probe; ``segmentation``
    adds the refinement's parts."""
    unet, vae = configs["unet"], configs["vae"]
    e = DTYPE_BYTES[dtype]
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    height, width = size
    h, w = math.ceil(height / scale), math.ceil(width / scale)
    n = images * (2 if generation.uses_cfg else 1)
    channels = [int(c) for c in unet["block_out_channels"]]
    levels = len(channels)
    per_block = _per_level(unet.get("layers_per_block", 2), levels)
    pixels = [_grid(h, w, 2**i) for i in range(levels)]
    heads = _heads(unet)
    attention_levels = sorted({level for _, level, _, _ in _attention_blocks(unet)})
    top = min(attention_levels, default=0)
    head_dim = max(channels[top] // heads[top], 1)
    if materialises is None:
        materialises = attention_materialises(device, dtype, heads[top], head_dim)

    activations = n * e * (
        sum((per_block[i] + 1) * channels[i] * pixels[i] for i in range(levels))
        + max(UNET_WORK * channels[i] * pixels[i] for i in range(levels))
        + 8 * int(unet.get("in_channels", 4)) * pixels[0]
    )
    self_attention = (
        n * e * SCORE_COPIES * max((heads[i] * pixels[i] ** 2 for i in attention_levels), default=0)
        if materialises else 0
    )
    layers = traced_layers(unet, generation.trace)
    traced = max((n * t.heads * _grid(h, w, t.factor) * TEXT_TOKENS * TRACED_BYTES for t in layers), default=0)
    max_heads = max((t.heads for t in layers), default=0)
    bins = generation.trace.per_timestep or 0  # per-timestep sums: one per bin, and K maps per image
    maps = images * TEXT_TOKENS * 4 * (
        max(bins, 1) * sum(t.heads * _grid(h, w, t.factor) for t in layers) + (max_heads + 4 + bins) * h * w
    )

    decoder = [int(c) for c in reversed(vae["block_out_channels"])]
    widest = max(max(decoder[max(j - 1, 0)], decoder[j]) * h * w * 4**j for j in range(len(decoder)))
    vae_attention = images * e * SCORE_COPIES * (h * w) ** 2 if materialises and vae.get("mid_block_add_attention", True) else 0
    vae_decode = images * (e * VAE_WORK * widest + IMAGE_BYTES * 3 * height * width) + vae_attention

    shard = rows_per_shard * SHARD_COPIES * ((1 + bins) * STORED_TOKENS * h * w * DTYPE_BYTES[map_dtype] + 3 * height * width)
    nxt = [channels[min(i + 1, levels - 1)] for i in range(levels)]
    workspace = FIXED_OVERHEAD + e * max(9 * channels[i] * (channels[i] + nxt[i]) for i in range(levels))
    weights = weight_bytes(configs, dtype)
    factor = segmentation.refine_factor if segmentation else 0
    refine_heads = max((hd for _, level, _, hd in _attention_blocks(unet) if 2**level == factor), default=0)
    refining = segmentation_parts(segmentation, h, w, images, refine_heads, size)
    affinity, probe, refinement = (refining.get(k, 0) for k in ("self-attention affinity", "affinity probe", "refinement"))

    parts = {
        "weights": weights,
        "self-attention": self_attention,
        "UNet activations": activations,
        "traced cross-attention": traced,
        "accumulated maps": maps,
        "VAE decode": vae_decode,
        "shard rows": shard,
        "kernel workspace": workspace,
        **refining,
    }
    unet_stage = activations + self_attention + traced + probe
    total = weights + workspace + maps + affinity + shard + max(unet_stage, vae_decode, refinement)
    return MemoryEstimate(parts, total, images)


def model_configs(source: str, revision: str | None = None) -> dict[str, dict[str, Any]]:
    """The ``unet``, ``vae`` and (if present) ``text_encoder`` and ``text_encoder_2`` (SDXL) configs
    of a diffusers model folder or hub id: JSON files only, no weights."""
    from diffusers.configuration_utils import ConfigMixin

    class _Config(ConfigMixin):
        config_name = "config.json"

    configs = {name: dict(_Config.load_config(source, subfolder=name, revision=revision)) for name in ("unet", "vae")}
    for name in TEXT_ENCODERS:
        try:
            configs[name] = dict(_Config.load_config(source, subfolder=name, revision=revision))
        except (OSError, ValueError):  # a model without this text encoder config: its weights go uncounted
            pass
    return configs


_ADVICE = {
    "weights": "use --dtype float16 or a device with more memory",
    "shard rows": "lower --shard-size (or raise --num-shards) or --height/--width",
}


def require_fits(estimate: MemoryEstimate, device: str, asked: str, batch_flags: str = "--batch-size") -> None:
    """Refuse (``MemoryBudgetError``) an estimate above ``HEADROOM`` of ``device``'s available
    memory; ``asked`` names the settings (``--height 65536 --width 65536 --batch-size 4``)."""
    available = available_memory(device)
    if available is None or estimate.total <= HEADROOM * available:
        return
    largest = max(estimate.parts, key=estimate.parts.__getitem__)
    advice = _ADVICE.get(largest, f"lower --height/--width or {batch_flags}")
    raise MemoryBudgetError(
        f"{asked}: one generation of {estimate.images} image{'s' * (estimate.images != 1)} needs "
        f"{estimate.describe()} but this {device} has {format_bytes(available)} available; {advice}"
    )


def check_geometry(
    configs: Mapping[str, Mapping[str, Any]],
    size: tuple[int, int],
    trace: TraceConfig,
    segmentation: SegmentationConfig | None = None,
) -> None:
    """Refuse (``ValueError``) an image side that is not a multiple of the VAE's factor, a trace
    selection that records no cross-attention layer of this UNet and a refine factor at which it
    has no self-attention (its attention blocks hold both)."""
    scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    for flag, value in zip(("--height", "--width"), size):
        if value % scale:
            raise ValueError(f"{flag} {value}: must be a multiple of {scale} for this model (its VAE downsamples {scale}x)")
    if not traced_layers(configs["unet"], trace):
        chosen = f"--layers {trace.layers}" + (f" --factors {','.join(map(str, trace.factors))}" if trace.factors else "")
        factors = ", ".join(map(str, model_factors(configs["unet"])))
        raise ValueError(
            f"{chosen}: traces no cross-attention layer of this model (it has cross-attention at factors "
            f"{factors}; --layers reference leaves out the mid block and factor 8)"
        )
    if segmentation is not None and segmentation.refine:
        have = model_factors(configs["unet"])
        if segmentation.refine_factor not in have:
            raise ValueError(
                f"refine factor {segmentation.refine_factor}: this model has no self-attention there "
                f"(it has self-attention at factors {', '.join(map(str, have))})"
            )


def require_generation_fits(
    configs: Mapping[str, Mapping[str, Any]],
    generation: GenerationConfig,
    size: tuple[int, int],
    *,
    batch_size: int,
    prompts: int,
    shard_prompts: int,
    dtype: str,
    device: str,
    map_dtype: str = "float16",
    segmentation: SegmentationConfig | None = None,
) -> MemoryEstimate:
    """Check the geometry, then refuse a run whose one generation would not fit on ``device``:
    ``min(batch_size, prompts)`` prompts per UNet call, shards of ``shard_prompts`` prompts;
    ``segmentation`` (``--classes``) adds the refinement's memory and checks its factor."""
    check_geometry(configs, size, generation.trace, segmentation)
    per_prompt = generation.images_per_prompt
    estimate = estimate_generation(
        configs, generation, size, max(min(batch_size, prompts), 1) * per_prompt, dtype, device,
        rows_per_shard=shard_prompts * per_prompt, map_dtype=map_dtype, segmentation=segmentation,
    )
    asked = f"--height {size[0]} --width {size[1]} --batch-size {batch_size}"
    flags = "--batch-size"
    if per_prompt > 1:
        asked, flags = f"{asked} --images-per-prompt {per_prompt}", "--batch-size/--images-per-prompt"
    require_fits(estimate, device, asked, flags)
    return estimate

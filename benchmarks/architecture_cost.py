"""Cost of tracing per architecture: untraced vs traced vs a brute-force full-matrix capture.

    python -m benchmarks.architecture_cost --arch sd15|sdxl|sd3|flux|chroma|pixart|sana|zimage|qwenimage|flux2|all
        [--size 256] [--steps 2] [--repeats 2] [--warmup 1] [--images 1] [--layers sd3=4 flux=2,4 sdxl=1,2,4 sana=4]
        [--located-repeats 0] [--device auto] [--dtype float32] [--tiny]

Each architecture's denoiser is built at the full size of its published config
(``benchmarks.shapes``, each with the model it comes from) with random weights; ``--layers`` reduces the transformer depth
where memory or CPU time demands it (recorded in the result, with per-layer figures). The text
encoders are one-layer stand-ins of the real hidden sizes (CLIP 768 / 1280, T5 4096, T5 windows
as the pipelines use them: SD3 256, Flux 512 tokens), VAE, tokenizers and scheduler are the
built-in tiny models' (VAE factor 8), so what is measured is the whole pipeline call, dominated
by the denoiser. Variants, on the same prompt, seed and batch:

- ``untraced``: the pipeline as diffusers runs it (fused attention everywhere);
- ``traced``: ``generate_traced`` (this project's tracer, every text-attention module:
  ``TraceConfig(layers="all")``);
- ``brute``: the pipeline with every text-attention module's attention kernel replaced by an
  explicit ``softmax(QKᵀ·s)`` over all keys, every head, whose probabilities are copied to the
  host on every call and summed per module there (``FullMatrixCapture``), as attention-map tools
  capture them (those keep every step, which multiplies the kept bytes by the step count:
  ``brute_copied_bytes`` in the result).

Time: traced and brute each alternate with untraced in this process (``cpu_time.paired_cpu_times``;
the process's CPU seconds per call too, which others' load on a shared machine disturbs less).
Memory: each variant runs once in a fresh subprocess, which reports its peak (CUDA:
``torch.cuda.max_memory_allocated``; CPU: peak RSS, ``VmHWM``, reset after loading:
``common.peak_memory``) and the growth over the loaded pipeline. Prints one line per ratio
(goals for traced: <= 1.10x time, <= 1.1x memory) and writes
``benchmarks/results/architecture_cost_<arch>.json`` with the machine and library versions.
``--located-repeats N`` also times N traced/untraced pairs in parts (``benchmarks.located_overhead``:
the traced modules and what runs outside the denoiser) and reports ``located_ratio``, which a
shared CPU's drift of whole calls does not hide.
``--tiny`` shrinks every width (checks that the script runs; not a measurement).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from benchmarks.common import (
    json_subprocess, peak_memory, resolve_device, result_record, synchronize, untraced_generate,
    write_result,
)
from benchmarks.cpu_time import paired_cpu_times
from benchmarks import located_overhead as located
from benchmarks.shapes import (  # the published configs and the SD-1.5 / SDXL pipelines
    CHROMA_TRANSFORMER,
    FLUX2_KLEIN_4B_TRANSFORMER,
    FLUX_TRANSFORMER,
    PIXART_SIGMA_TRANSFORMER,
    SANA_1600M_TRANSFORMER,
    QWENIMAGE_TRANSFORMER,
    SD3_TRANSFORMER,
    SD15_TINY,
    SD15_UNET,
    SDXL_TINY,
    SDXL_UNET,
    ZIMAGE_TRANSFORMER,
    base_pipeline,
    clip_encoder,
    sd15_pipeline,
    sdxl_pipeline,
)
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of

PROMPT = "a photo of a cat sitting on a red sofa next to a dog"
VARIANTS = ("untraced", "traced", "brute")
GOALS = {"time": 1.10, "memory": 1.1}


# --- SD3 and Flux pipelines (SD 1.x and SDXL: ``benchmarks.shapes``) ---------------------------


def t5_encoder(width: int, vocab_size: int) -> Any:
    """A one-layer T5 encoder whose outputs have width ``width`` (8 heads of 64, small MLP)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=width, d_kv=64, d_ff=1024, num_layers=1, num_heads=8,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
    ))


def sd3_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """SD3: tiny-sd3's VAE (16 channels), tokenizers and scheduler; this MMDiT; CLIP-L / CLIP-G
    stand-ins splitting the pooled width 3:5 (768 + 1280) and a T5 of the joint width."""
    from diffusers import SD3Transformer2DModel

    base = base_pipeline("tiny-sd3")
    pooled = config["pooled_projection_dim"]
    transformer = SD3Transformer2DModel(**config)
    return type(base)(**{
        **base.components, "transformer": transformer,
        "text_encoder": clip_encoder(pooled * 3 // 8, projection=True),
        "text_encoder_2": clip_encoder(pooled - pooled * 3 // 8, projection=True),
        "text_encoder_3": t5_encoder(config["joint_attention_dim"], len(base.tokenizer_3)),
    })


def flux_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Flux: tiny-flux's CLIP tokenizer and scheduler, tiny-sd3's 16-channel factor-8 VAE, a T5
    tokenizer of ``text_tokens`` positions; this transformer; CLIP (pooled) and T5 stand-ins."""
    from diffusers import FluxTransformer2DModel

    from transforms.models.tiny_t5 import build_t5_tokenizer

    base = base_pipeline("tiny-flux")
    tokenizer_2 = build_t5_tokenizer(model_max_length=text_tokens)
    transformer = FluxTransformer2DModel(**config)
    return type(base)(**{
        **base.components, "transformer": transformer, "vae": base_pipeline("tiny-sd3").vae,
        "text_encoder": clip_encoder(config["pooled_projection_dim"]),
        "text_encoder_2": t5_encoder(config["joint_attention_dim"], len(tokenizer_2)), "tokenizer_2": tokenizer_2,
    })


def chroma_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Chroma: tiny-chroma's scheduler, tiny-sd3's 16-channel factor-8 VAE, a T5 tokenizer of
    ``text_tokens`` positions and a one-layer T5 of the joint width; this transformer."""
    from diffusers import ChromaTransformer2DModel

    from transforms.models.tiny_t5 import build_t5_tokenizer

    base = base_pipeline("tiny-chroma")
    tokenizer = build_t5_tokenizer(model_max_length=text_tokens)
    return type(base)(**{
        **base.components, "transformer": ChromaTransformer2DModel(**config), "vae": base_pipeline("tiny-sd3").vae,
        "tokenizer": tokenizer, "text_encoder": t5_encoder(config["joint_attention_dim"], len(tokenizer)),
    })


def pixart_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """PixArt-Σ: tiny-pixart's VAE (4 channels, factor 8) and scheduler, a T5 tokenizer of
    ``text_tokens`` positions and a one-layer T5 of the caption width; this transformer."""
    from diffusers import PixArtTransformer2DModel

    from transforms.models.tiny_t5 import build_t5_tokenizer

    base = base_pipeline("tiny-pixart")
    tokenizer = build_t5_tokenizer(model_max_length=text_tokens)
    return type(base)(**{
        **base.components, "transformer": PixArtTransformer2DModel(**config), "tokenizer": tokenizer,
        "text_encoder": t5_encoder(config["caption_channels"], len(tokenizer)),
    })


def sana_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Sana: tiny-sana's Gemma-style tokenizer and scheduler, a factor-32 ``AutoencoderDC`` of the
    transformer's latent channels and a one-layer Gemma-2 of the caption width; this transformer."""
    from diffusers import SanaTransformer2DModel

    from transforms.models.tiny_sana import dc_autoencoder, gemma_encoder

    base = base_pipeline("tiny-sana")
    encoder = gemma_encoder(len(base.tokenizer), config["caption_channels"], 0, num_hidden_layers=1,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=64, intermediate_size=1024)
    return type(base)(**{
        **base.components, "transformer": SanaTransformer2DModel(**config), "text_encoder": encoder,
        "vae": dc_autoencoder(0, latent_channels=config["in_channels"]),
    })


def zimage_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Z-Image: tiny-zimage's Qwen-style tokenizer (chat template) and scheduler, tiny-sd3's
    16-channel factor-8 VAE, a one-layer Qwen3 of the caption width (Qwen3-4B's 2560); this
    transformer (its pad tokens set: they are uninitialised in a fresh model)."""
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    base = base_pipeline("tiny-zimage")
    transformer = ZImageTransformer2DModel(**{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()})
    with torch.no_grad():
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    width = config["cap_feat_dim"]
    encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(base.tokenizer), hidden_size=width, intermediate_size=1024, num_hidden_layers=1,
        num_attention_heads=max(1, width // 128), num_key_value_heads=max(1, width // 128), head_dim=min(128, width),
    ))
    return type(base)(**{**base.components, "transformer": transformer, "vae": base_pipeline("tiny-sd3").vae,
                         "text_encoder": encoder})


def qwenimage_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Qwen-Image: tiny-qwenimage's tokenizer and scheduler, a small 16-channel factor-8
    ``AutoencoderKLQwenImage``, a one-layer Qwen2.5-VL text model of the joint width (28 heads of
    128, 4 key/value heads as Qwen2.5-VL-7B; a small MLP); this transformer."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    from transforms.models.tiny_qwenimage import qwen_text_encoder

    base = base_pipeline("tiny-qwenimage")
    width = config["joint_attention_dim"]
    heads = max(1, width // 128)
    channels = config["in_channels"] // 4
    encoder = qwen_text_encoder(base.tokenizer, 0, width, num_hidden_layers=1, num_attention_heads=heads,
                                num_key_value_heads=min(4, heads), intermediate_size=1024,
                                rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"})
    vae = AutoencoderKLQwenImage(base_dim=16, z_dim=channels, num_res_blocks=1, latents_mean=[0.0] * channels,
                                 latents_std=[1.0] * channels)
    return type(base)(**{**base.components, "transformer": QwenImageTransformer2DModel(**config), "vae": vae,
                         "text_encoder": encoder})


def flux2_klein_pipeline(config: dict[str, Any], text_tokens: int) -> Any:
    """Flux.2 [klein]: tiny-flux2-klein's scheduler and chat-template tokenizer (``text_tokens``
    positions), a factor-8 ``AutoencoderKLFlux2`` of the config's latent channels (tiny widths), and
    a 28-layer Qwen3 stand-in of the hidden width the config implies (one head, small MLP), so the
    pipeline's own layers (9, 18, 27) are stacked; this transformer, as a base model (true CFG)."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    from transforms.models.tiny_flux2 import KLEIN_TEXT_LAYERS
    from transforms.models.tiny_qwen import build_qwen_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    base = base_pipeline("tiny-flux2-klein")
    tokenizer = build_qwen_tokenizer(model_max_length=text_tokens)
    hidden = config["joint_attention_dim"] // 3
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=KLEIN_TEXT_LAYERS,
        num_attention_heads=1, num_key_value_heads=1, head_dim=128, tie_word_embeddings=True,
    ))
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=config["in_channels"] // 4,
        norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
    )
    return type(base)(**{
        **base.components, "transformer": Flux2Transformer2DModel(**config), "vae": vae,
        "tokenizer": tokenizer, "text_encoder": text_encoder,
    })


@dataclass(frozen=True)
class Arch:
    """One architecture's benchmark shape."""

    source: str  # the published model the config comes from
    config: dict[str, Any]
    build: Callable[[dict[str, Any], int], Any]
    depth_keys: tuple[str, ...] = ()  # what ``--layers ARCH=…`` sets
    tiny: dict[str, Any] | None = None  # ``--tiny`` overrides (a smoke check)
    text_tokens: int = 77  # T5 window (Flux: the tokenizer's; SD3's is fixed by its architecture)
    # config key set to the latent side of ``--size`` (PixArt: its sample size picks the pipeline's
    # resolution bins, which must hold the size measured; it changes no weight)
    size_key: str | None = None
    size_factor: int = 8  # pixels per latent of ``size_key`` (the VAE factor: Sana's DC-AE 32)


ARCHS: dict[str, Arch] = {
    "sd15": Arch(
        "runwayml/stable-diffusion-v1-5 (unet/config.json)", SD15_UNET, sd15_pipeline,
        tiny=SD15_TINY,
    ),
    "sdxl": Arch(
        "stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json)", SDXL_UNET, sdxl_pipeline,
        ("transformer_layers_per_block",),
        tiny=SDXL_TINY,
    ),
    "sd3": Arch(
        "stabilityai/stable-diffusion-3-medium-diffusers (transformer/config.json)", SD3_TRANSFORMER, sd3_pipeline,
        ("num_layers",),
        tiny=dict(num_layers=2, attention_head_dim=8, num_attention_heads=4, joint_attention_dim=96,
                  caption_projection_dim=32, pooled_projection_dim=80, pos_embed_max_size=96),
        text_tokens=256,
    ),
    "flux": Arch(
        "black-forest-labs/FLUX.1-dev (transformer/config.json)", FLUX_TRANSFORMER, flux_pipeline,
        ("num_layers", "num_single_layers"),
        tiny=dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6)),
        text_tokens=512,
    ),
    "chroma": Arch(
        "lodestones/Chroma1-HD (transformer/config.json)", CHROMA_TRANSFORMER, chroma_pipeline,
        ("num_layers", "num_single_layers"),
        tiny=dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, axes_dims_rope=(4, 6, 6), approximator_num_channels=16,
                  approximator_hidden_dim=32, approximator_layers=1),
        text_tokens=512,
    ),
    "pixart": Arch(
        "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS (transformer/config.json)", PIXART_SIGMA_TRANSFORMER, pixart_pipeline,
        ("num_layers",),
        tiny=dict(num_layers=2, attention_head_dim=8, num_attention_heads=4, cross_attention_dim=32, caption_channels=64),
        text_tokens=300,
        size_key="sample_size",
    ),
    "sana": Arch(
        "Efficient-Large-Model/Sana_1600M_1024px_diffusers (transformer/config.json)", SANA_1600M_TRANSFORMER,
        sana_pipeline, ("num_layers",),
        tiny=dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, num_cross_attention_heads=2,
                  cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=32, in_channels=4, out_channels=4),
        text_tokens=300,
        size_key="sample_size",
        size_factor=32,
    ),
    "zimage": Arch(
        "Tongyi-MAI/Z-Image-Turbo (transformer/config.json)", ZIMAGE_TRANSFORMER, zimage_pipeline,
        ("n_layers", "n_refiner_layers"),
        tiny=dict(dim=32, n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=(8, 4, 4)),
        text_tokens=512,
    ),
    "qwenimage": Arch(
        "Qwen/Qwen-Image (transformer/config.json)", QWENIMAGE_TRANSFORMER, qwenimage_pipeline, ("num_layers",),
        tiny=dict(num_layers=2, attention_head_dim=16, num_attention_heads=3, joint_attention_dim=256, in_channels=16,
                  out_channels=4, axes_dims_rope=(8, 4, 4)),
    ),
    "flux2": Arch(
        "black-forest-labs/FLUX.2-klein-4B (transformer/config.json)", FLUX2_KLEIN_4B_TRANSFORMER, flux2_klein_pipeline,
        ("num_layers", "num_single_layers"),
        tiny=dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=48, in_channels=16, axes_dims_rope=(4, 4, 4, 4)),
        text_tokens=512,
    ),
}
TINY_TEXT_TOKENS = 64


def denoiser_config(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """The published config, shrunk by ``--tiny`` and with ``--layers``' depths."""
    spec = ARCHS[arch]
    config = {**spec.config, **(spec.tiny if args.tiny else {})}
    if spec.size_key:
        config[spec.size_key] = args.size // spec.size_factor
    depth = args.layers.get(arch)
    if depth is None:
        return config
    keys = spec.depth_keys
    if len(keys) == 1 and isinstance(config[keys[0]], tuple):
        if len(depth) != len(config[keys[0]]):
            raise SystemExit(f"--layers {arch}= takes {len(config[keys[0]])} numbers ({keys[0]})")
        return {**config, keys[0]: tuple(depth)}
    if len(depth) != len(keys):
        raise SystemExit(f"--layers {arch}= takes {len(keys)} number(s) ({', '.join(keys) or 'none'})")
    return {**config, **dict(zip(keys, depth))}


def text_tokens(arch: str, args: argparse.Namespace) -> int:
    tokens = ARCHS[arch].text_tokens
    return min(tokens, TINY_TEXT_TOKENS) if args.tiny and arch in ("flux", "chroma", "flux2") else tokens


def build_pipeline(arch: str, args: argparse.Namespace) -> Any:
    """The benchmark pipeline of ``arch`` on the run's device and dtype (seeded random weights)."""
    torch.manual_seed(0)
    pipe = ARCHS[arch].build(denoiser_config(arch, args), text_tokens(arch, args))
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(args.device)
    return pipe if args.dtype == "float32" else pipe.to(getattr(torch, args.dtype))


# --- the brute-force comparison ---------------------------------------------------------------


class _ExplicitAttention(TorchFunctionMode):
    """Replaces ``F.scaled_dot_product_attention`` by ``capture.attention`` while active."""

    def __init__(self, capture: "FullMatrixCapture") -> None:
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is F.scaled_dot_product_attention:
            return self.capture.attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class FullMatrixCapture:
    """Brute-force capture: inside each given module (the tracer's text-attention modules), the
    model's own processor runs but its attention kernel becomes an explicit softmax over all keys,
    every head; each call's full ``(batch, heads, queries, keys)`` probabilities go to the host
    and are summed there per module (``sums``); ``copied_bytes`` counts what crossed."""

    def __init__(self, denoiser: Any, processor_names: list[str]) -> None:
        self.modules = {n.removesuffix(".processor"): denoiser.get_submodule(n.removesuffix(".processor"))
                        for n in processor_names}
        self.sums: dict[str, torch.Tensor] = {}
        self.copied_bytes = 0
        self._mode = _ExplicitAttention(self)
        self._current: str | None = None
        self._hooks: list[Any] = []

    def __enter__(self) -> "FullMatrixCapture":
        for name, module in self.modules.items():
            self._hooks.append(module.register_forward_pre_hook(lambda _m, _a, name=name: self._begin(name)))
            self._hooks.append(module.register_forward_hook(lambda _m, _a, _o: self._end()))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _begin(self, name: str) -> None:
        self._current = name
        self._mode.__enter__()

    def _end(self) -> None:
        self._mode.__exit__(None, None, None)
        self._current = None

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **_: Any) -> torch.Tensor:
        """``softmax(q·kᵀ·s + mask)·v`` with the probabilities kept (``is_causal``/dropout unused)."""
        scores = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scale is None else scale)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        probs = scores.softmax(-1)
        host = probs.detach().to("cpu")
        self.copied_bytes += host.numel() * host.element_size()
        name = self._current or "?"
        self.sums[name] = host if name not in self.sums else self.sums[name].add_(host)
        return probs @ value


# --- the three variants -----------------------------------------------------------------------


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(steps=args.steps, height=args.size, width=args.size, trace=TraceConfig(layers="all"))


def traced_names(pipe: Any, args: argparse.Namespace) -> list[str]:
    """The processor names the tracer records under the benchmark's configuration."""
    return located.traced_names(pipe, generation_config(args))


def run_variant(pipe: Any, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One generation of ``variant``; the brute capture's byte counts."""
    prompts, seeds, config = [PROMPT] * args.images, list(range(args.images)), generation_config(args)
    if variant == "traced":
        generate_traced(pipe, prompts, seeds, config)
        return {}
    if variant == "untraced":
        untraced_generate(pipe, prompts, seeds, config)
        return {}
    with FullMatrixCapture(architecture_of(pipe).denoiser(pipe), traced_names(pipe, args)) as capture:
        untraced_generate(pipe, prompts, seeds, config)
    kept = sum(t.numel() * t.element_size() for t in capture.sums.values())
    return {"brute_copied_bytes": capture.copied_bytes, "brute_kept_bytes": kept}


def measure_memory(arch: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one generation of ``variant`` in this (fresh) process."""
    pipe = build_pipeline(arch, args)
    extra: dict[str, Any] = {}
    memory = peak_memory(lambda: extra.update(run_variant(pipe, variant, args)), args.device)
    return {"variant": variant, **memory, **extra}


def passed_argv(args: argparse.Namespace) -> list[str]:
    """The settings as arguments for the memory subprocesses (without ``--arch``)."""
    argv = [f"--{k}={v}" for k in ("device", "dtype", "images", "size", "steps") for v in [getattr(args, k)]]
    if args.layers:
        argv += ["--layers", *(f"{a}={','.join(map(str, d))}" for a, d in args.layers.items())]
    return argv + (["--tiny"] if args.tiny else [])


def benchmark(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one architecture, write its result file and print one line per ratio."""
    argv = [*passed_argv(args), "--arch", arch, "--memory-of"]
    memory = {v: json_subprocess("benchmarks.architecture_cost", [*argv, v]) for v in VARIANTS}
    pipe = build_pipeline(arch, args)
    denoiser = architecture_of(pipe).denoiser(pipe)
    layers = len(traced_names(pipe, args))

    def timed(variant: str) -> Callable[[], None]:
        def run() -> None:
            run_variant(pipe, variant, args)
            synchronize(args.device)
        return run

    # wall and this process's CPU seconds per call (the latter robust to a shared machine)
    timing = {variant: paired_cpu_times(timed(variant), timed("untraced"), args.repeats, args.warmup)
              for variant in ("traced", "brute")}
    untraced_seconds = timing["traced"]["b_median"]
    parts = None
    if args.located_repeats:
        parts = located.located_overhead(pipe, [PROMPT] * args.images, list(range(args.images)),
                                         generation_config(args), args.located_repeats, args.device)
    ratios: dict[str, dict[str, float]] = {}
    per_layer: dict[str, dict[str, float]] = {}
    for variant in ("traced", "brute"):
        used, plain = memory[variant], memory["untraced"]
        ratios[variant] = {
            "time": timing[variant]["ratio_median"],
            "cpu_time": timing[variant]["cpu_ratio_median"],
            "peak_memory": used["peak_bytes"] / plain["peak_bytes"],
            "memory_growth": used["growth_bytes"] / max(plain["growth_bytes"], 1),
        }
        per_layer[variant] = {  # what each traced layer adds, per denoiser call and per generation
            "seconds_per_layer_step": (timing[variant]["a_median"] - timing[variant]["b_median"]) / (layers * args.steps),
            "peak_bytes_per_layer": (used["peak_bytes"] - plain["peak_bytes"]) / layers,
        }
    config = denoiser_config(arch, args)
    denoiser_facts = {
        "class": type(denoiser).__name__, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "parameters": sum(p.numel() for p in denoiser.parameters()), "reduced": arch in args.layers,
        "traced_layers": layers, "text_tokens": text_tokens(arch, args),
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("memory_of", "arch")}
    settings.update(layers={a: list(d) for a, d in args.layers.items()}, trace_layers="all",
                    cfg_batch=architecture_of(pipe).uses_cfg(generation_config(args)))
    result = result_record(
        f"architecture_cost_{arch}", ratios["traced"]["time"], args.device,
        benchmark="architecture_cost",
        what="traced / untraced and brute-force full-matrix capture / untraced: seconds per generation and peak "
             "memory, full-size denoiser from its published config (random weights), one-layer text encoders",
        arch=arch,
        source=ARCHS[arch].source,
        denoiser=denoiser_facts,
        settings=settings,
        seconds_per_generation={"untraced": untraced_seconds, "traced": timing["traced"]["a_median"],
                                "brute": timing["brute"]["a_median"]},
        ratio_peak_memory=ratios["traced"]["peak_memory"],
        ratio_memory_growth=ratios["traced"]["memory_growth"],
        ratio_cpu_time=ratios["traced"]["cpu_time"],
        located_ratio=None if parts is None else parts["located_ratio"],
        located=parts,
        brute_ratio=ratios["brute"]["time"],
        brute_ratio_cpu_time=ratios["brute"]["cpu_time"],
        brute_ratio_peak_memory=ratios["brute"]["peak_memory"],
        brute_ratio_memory_growth=ratios["brute"]["memory_growth"],
        brute_copied_bytes=memory["brute"]["brute_copied_bytes"],
        brute_kept_bytes=memory["brute"]["brute_kept_bytes"],
        per_layer=per_layer,
        goals=GOALS,
        timing=timing,
        memory=memory,
    )
    path = write_result(result["name"], result)
    mib = 2**20
    where = f"{arch}, {args.size}px, {args.steps} steps, {args.images} image(s), {args.device} {args.dtype}"
    for variant in ("traced", "brute"):
        goal = f" (goal <= {GOALS['time']})" if variant == "traced" else ""
        print(f"{where}: {variant}/untraced time = {ratios[variant]['time']:.3f}x{goal}; "
              f"{timing[variant]['a_median']:.2f}s vs {timing[variant]['b_median']:.2f}s "
              f"(process CPU time {ratios[variant]['cpu_time']:.3f}x)")
        goal = f" (goal <= {GOALS['memory']})" if variant == "traced" else ""
        print(f"{where}: {variant}/untraced peak memory = {ratios[variant]['peak_memory']:.3f}x{goal}; "
              f"{memory[variant]['peak_bytes'] / mib:.0f} vs {memory['untraced']['peak_bytes'] / mib:.0f} MiB "
              f"{memory['untraced']['kind']}, growth {ratios[variant]['memory_growth']:.3f}x")
    if parts is not None:
        print(f"{where}: {located.describe(parts)}")
    print(f"{where}: {layers} traced layers, brute copied {result['brute_copied_bytes'] / mib:.0f} MiB to the host "
          f"per generation; results: {path}")
    return result


def parse_layers(items: list[str]) -> dict[str, tuple[int, ...]]:
    """``["sd3=4", "flux=2,4"]`` → ``{"sd3": (4,), "flux": (2, 4)}``."""
    layers = {}
    for item in items:
        arch, _, numbers = item.partition("=")
        if arch not in ARCHS or not numbers:
            raise SystemExit(f"--layers takes ARCH=N[,N…] with ARCH one of {', '.join(ARCHS)}, got {item!r}")
        layers[arch] = tuple(int(n) for n in numbers.split(","))
    return layers


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings every cost benchmark of a denoiser shape takes (device, dtype, batch, size,
    steps, repeats)."""
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, ``--layers`` parsed and ``--device auto`` resolved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=(*ARCHS, "all"), required=True)
    add_run_arguments(parser)
    parser.add_argument("--layers", nargs="*", default=[], metavar="ARCH=N[,N]",
                        help="reduced depths: sdxl=1,2,4 (transformer layers per block), sd3=N, flux=DOUBLE,SINGLE, "
                             "zimage=LAYERS,REFINERS")
    parser.add_argument("--located-repeats", type=int, default=0, help="traced/untraced pairs timed in parts (0: none)")
    parser.add_argument("--tiny", action="store_true", help="shrink every width (a smoke check, not a measurement)")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.layers = parse_layers(args.layers)
    args.device = resolve_device(args.device)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.memory_of:
        print(json.dumps(measure_memory(args.arch, args.memory_of, args)))
        return []
    return [benchmark(arch, args) for arch in (ARCHS if args.arch == "all" else [args.arch])]


if __name__ == "__main__":
    main()

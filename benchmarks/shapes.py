"""Real model shapes for benchmarks: denoisers at the size of their published configs, random weights.

No weights are downloaded: each denoiser is built from the config of the model named beside it
(diffusers' ``unet/config.json`` or ``transformer/config.json``) with seeded random weights, so it
costs what the real model costs. Only the denoiser is full size: the text encoders are one-layer
CLIP stand-ins of the real hidden sizes, and VAE, tokenizers and scheduler are the built-in tiny
models' (VAE factor 8). The tiny VAE and shallow text encoders make the untraced pipeline call
cheaper than the real one, so a traced/untraced ratio measured here is, if anything, an overstatement.

``build(name)`` returns a pipeline in memory; ``saved(name)`` a cached diffusers folder of it
(``save_pretrained``), which ``daam-datasets run --model PATH`` and the original daam both load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from transforms.models.loading import ModelSpec, load_pipeline
from transforms.models.tiny_sd import cached_model

SHAPES_VERSION = "1"  # bump when a shape or a stand-in changes (cached folders are rebuilt)
SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5, unet/config.json
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD21_BASE_UNET = dict(  # stabilityai/stable-diffusion-2-1-base, unet/config.json
    SD15_UNET,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SD3_TRANSFORMER = dict(  # stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
FLUX_TRANSFORMER = dict(  # black-forest-labs/FLUX.1-dev, transformer/config.json
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
CHROMA_TRANSFORMER = dict(  # lodestones/Chroma1-HD, transformer/config.json: FLUX.1's blocks, an approximator
    {k: v for k, v in FLUX_TRANSFORMER.items() if k not in ("pooled_projection_dim", "guidance_embeds")},
    approximator_num_channels=64,
    approximator_hidden_dim=5120,
    approximator_layers=5,
)
QWENIMAGE_TRANSFORMER = dict(  # Qwen/Qwen-Image, transformer/config.json: double-stream blocks only
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)
# black-forest-labs/FLUX.2-klein-4B, transformer/config.json (as diffusers' convert_flux2_to_diffusers.py
# writes it): 3072 wide, Qwen3-4B's hidden states of 3 layers (3 x 2560) as text, no guidance embedding
FLUX2_KLEIN_4B_TRANSFORMER = dict(
    patch_size=1,
    in_channels=128,
    num_layers=5,
    num_single_layers=20,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=7680,
    timestep_guidance_channels=256,
    mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32),
    rope_theta=2000,
    eps=1e-6,
    guidance_embeds=False,
)
PIXART_SIGMA_TRANSFORMER = dict(  # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, transformer/config.json
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    caption_channels=4096,
    sample_size=128,
    patch_size=2,
    attention_bias=True,
    activation_fn="gelu-approximate",
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    num_embeds_ada_norm=1000,
    interpolation_scale=2,
    use_additional_conditions=False,
)
SANA_1600M_TRANSFORMER = dict(  # Efficient-Large-Model/Sana_1600M_1024px_diffusers, transformer/config.json
    in_channels=32,
    out_channels=32,
    num_attention_heads=70,
    attention_head_dim=32,
    num_layers=20,
    num_cross_attention_heads=20,
    cross_attention_head_dim=112,
    cross_attention_dim=2240,
    caption_channels=2304,
    mlp_ratio=2.5,
    attention_bias=False,
    sample_size=32,
    patch_size=1,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
)
ZIMAGE_TRANSFORMER = dict(  # Tongyi-MAI/Z-Image-Turbo, transformer/config.json
    all_patch_size=(2,),
    all_f_patch_size=(1,),
    in_channels=16,
    dim=3840,
    n_layers=30,
    n_refiner_layers=2,
    n_heads=30,
    n_kv_heads=30,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=2560,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=(32, 48, 48),
    axes_lens=(1536, 512, 512),
)
MICRO_CONDITIONS = 6  # SDXL's time ids: original size, crop corner, target size
# ``tiny`` overrides: every width shrunk (smoke checks of the scripts, not measurements)
SD15_TINY = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, attention_head_dim=2, cross_attention_dim=32)
SD21_TINY = dict(SD15_TINY, attention_head_dim=(2, 2, 4, 4), cross_attention_dim=48)
SDXL_TINY = dict(block_out_channels=(32, 64, 64), layers_per_block=1, transformer_layers_per_block=(1, 1, 2),
                 attention_head_dim=(1, 2, 2), cross_attention_dim=80, addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=96)


def clip_encoder(hidden: int, projection: bool = False) -> Any:
    """A one-layer CLIP text encoder of width ``hidden`` (with a text projection of that width)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=1,
        num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def base_pipeline(name: str) -> Any:
    """Built-in model ``name`` on CPU, whose VAE, tokenizers and scheduler a shape reuses."""
    return load_pipeline(ModelSpec(name, device="cpu"))


def sd15_pipeline(config: dict[str, Any], text_tokens: int = 77) -> Any:
    """SD 1.x/2.x: the tiny model's VAE, tokenizer and scheduler; this UNet; CLIP of its width."""
    from diffusers import UNet2DConditionModel

    base = base_pipeline("tiny")
    unet = UNet2DConditionModel(**config)
    return type(base)(**{**base.components, "unet": unet, "text_encoder": clip_encoder(config["cross_attention_dim"])})


def sdxl_pipeline(config: dict[str, Any], text_tokens: int = 77) -> Any:
    """SDXL: tiny-sdxl's VAE, tokenizers and scheduler; this UNet; two CLIPs whose widths the
    UNet's config implies (the second's pooled vector feeds the ``text_time`` embedding)."""
    from diffusers import UNet2DConditionModel

    base = base_pipeline("tiny-sdxl")
    pooled = config["projection_class_embeddings_input_dim"] - MICRO_CONDITIONS * config["addition_time_embed_dim"]
    first = config["cross_attention_dim"] - pooled
    unet = UNet2DConditionModel(**config)
    return type(base)(**{
        **base.components, "unet": unet, "text_encoder": clip_encoder(first),
        "text_encoder_2": clip_encoder(pooled, projection=True),
    })


@dataclass(frozen=True)
class Shape:
    """One UNet model shape: where its config comes from, the config, how its pipeline is built."""

    source: str
    config: dict[str, Any]
    build: Callable[[dict[str, Any], int], Any]
    tiny: dict[str, Any]
    default_side: int  # the model's native resolution in pixels


SHAPES: dict[str, Shape] = {
    "sd15": Shape("runwayml/stable-diffusion-v1-5", SD15_UNET, sd15_pipeline, SD15_TINY, 512),
    "sd21": Shape("stabilityai/stable-diffusion-2-1-base", SD21_BASE_UNET, sd15_pipeline, SD21_TINY, 512),
    "sdxl": Shape("stabilityai/stable-diffusion-xl-base-1.0", SDXL_UNET, sdxl_pipeline, SDXL_TINY, 1024),
}


def shape_config(name: str, tiny: bool = False) -> dict[str, Any]:
    """The denoiser config of shape ``name`` (shrunk with ``tiny``)."""
    shape = SHAPES[name]
    return {**shape.config, **(shape.tiny if tiny else {})}


def build(name: str, device: str = "cpu", tiny: bool = False) -> Any:
    """The pipeline of shape ``name`` on ``device``, seeded random weights, progress bars off."""
    torch.manual_seed(0)
    pipe = SHAPES[name].build(shape_config(name, tiny), 77)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def saved(name: str, tiny: bool = False, cache_dir: Path | None = None) -> Path:
    """A cached diffusers folder of shape ``name`` (built and saved on first use)."""
    folder = f"bench-{name}{'-tiny' if tiny else ''}-v{SHAPES_VERSION}"
    return cached_model(folder, lambda: build(name, tiny=tiny), cache_dir)


def parameters(pipe: Any) -> int:
    """Parameters of the pipeline's denoiser."""
    return sum(p.numel() for p in pipe.unet.parameters())

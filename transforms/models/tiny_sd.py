"""The built-in tiny model: an SD-1.x-shaped Stable Diffusion pipeline with random weights.

No weights can be downloaded in offline environments, so the project builds a small pipeline
deterministically (fixed seed) and caches it as an ordinary diffusers model folder. Everything
downstream loads it with ``from_pretrained`` exactly like a real checkpoint.

Shape: a UNet with cross-attention at latent factors 1, 2 and 4 in the down and up blocks and at
factor 8 in the mid block (as SD 1.x), a VAE with ``vae_scale_factor`` 8, a 2-layer CLIP text
encoder and the real CLIP BPE tokenizer (49408 tokens). Cross-attention query/key weights are
scaled up so that the random model's attention is peaked and per-token maps differ.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny"
TINY_MODEL_VERSION = "1"
_SEED = 20231117
_QK_GAIN = 6.0
_VOCAB_ASSET = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2


def cache_root() -> Path:
    """Folder for built artefacts: ``$DAAM_DATASETS_CACHE`` or ``~/.cache/daam-datasets``."""
    env = os.environ.get("DAAM_DATASETS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "daam-datasets"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary (49408 entries) and BPE merges, from the vendored open_clip file."""
    asset = resources.files("transforms").joinpath("assets", _VOCAB_ASSET)
    with asset.open("rb") as raw, gzip.open(raw) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_tokenizer():
    """A real CLIP tokenizer built from the vendored vocabulary (no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _build_components() -> dict:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from .tiny_parts import clip_text_encoder, scale_cross_attention_qk, tiny_vae

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=(2, 2, 4, 4),
        norm_num_groups=8,
    )
    scale_cross_attention_qk(unet, _QK_GAIN)
    vae = tiny_vae(_SEED + 1, (8, 8, 16, 16), 4, sample_size=512)
    text_encoder = clip_text_encoder(32, _SEED + 2)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": build_clip_tokenizer(),
        "scheduler": scheduler,
    }


def build_tiny_pipeline():
    """Build the tiny ``StableDiffusionPipeline`` in memory (deterministic weights)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **_build_components(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def cached_model(folder: str, build: Callable[[], Any], cache_dir: Path | None = None) -> Path:
    """The cached model folder ``folder`` under the cache root, saving ``build()``'s pipeline there
    first if needed (staged in a temporary folder and renamed: safe under concurrency)."""
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / folder
    if (target / "model_index.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    logger.info("building the built-in model %s into %s", folder, target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        build().save_pretrained(staging, safe_serialization=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").exists():
                raise
            # another process finished first; its copy is identical
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    """Return the cached tiny model folder, building it first if needed (safe under concurrency)."""
    return cached_model(f"tiny-sd-v{TINY_MODEL_VERSION}", build_tiny_pipeline, cache_dir)

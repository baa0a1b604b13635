"""Batched, traced text-to-image generation: B prompts per UNet call, maps kept apart per image."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .class_maps import SampleSegmentation
from .config import GenerationConfig
from .heatmap import GlobalHeatMap
from .store import HeatMapStore
from .tracer import CrossAttentionTracer
from .words import tokenize_prompt

SEED_MODULUS = 2**63


@dataclass
class TracedSample:
    """One generated image (float32 ``(H, W, 3)`` in [0, 1]) with its DAAM global map."""

    prompt_index: int
    image_index: int
    seed: int
    image: np.ndarray
    heat_map: GlobalHeatMap
    segmentation: SampleSegmentation | None = None

    def pil_image(self) -> Any:
        """The image as an 8-bit RGB ``PIL.Image`` (diffusers' rounding)."""
        from PIL import Image

        return Image.fromarray((self.image * 255).round().astype("uint8"))


def image_seed(seed: int, image_index: int) -> int:
    """Generator seed of the ``image_index``-th image of a prompt whose seed is ``seed``.

    Image 0 uses the prompt's seed; later images use a hash of (seed, index), so that image 1
    of one prompt never shares noise with image 0 of the prompt seeded ``seed + 1``.
    """
    if image_index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{image_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def image_size(pipe: Any, config: GenerationConfig) -> tuple[int, int]:
    """(height, width) in pixels: the configured size or the model's default."""
    default = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return config.height or default, config.width or default


def check_inputs(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    """Validate a batch before any model work."""
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt")
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is empty or not a string: {prompt!r}")
    for i, seed in enumerate(seeds):
        if not 0 <= int(seed) < SEED_MODULUS:
            raise ValueError(f"seed {i} = {seed} is outside [0, 2**63)")


def generate_traced(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: GenerationConfig | None = None,
    negative_prompts: Sequence[str | None] | None = None,
) -> list[TracedSample]:
    """Generate ``images_per_prompt`` images for each prompt in one batched call, with maps.

    Each image gets its own CPU ``torch.Generator`` seeded from its prompt's seed, so a prompt
    gives the same image and maps alone or inside any batch, on any device.
    Results are ordered prompt-major: prompt 0 image 0, prompt 0 image 1, prompt 1 image 0, …
    """
    config = config or GenerationConfig()
    check_inputs(prompts, seeds)
    height, width = image_size(pipe, config)
    per_prompt = config.images_per_prompt
    generators = [
        torch.Generator("cpu").manual_seed(image_seed(int(seed), k))
        for seed in seeds
        for k in range(per_prompt)
    ]
    negatives = None
    if negative_prompts is not None or config.negative_prompt is not None:
        given = negative_prompts or [None] * len(prompts)
        negatives = [n if n is not None else (config.negative_prompt or "") for n in given]

    store = HeatMapStore(config.trace)
    scale = int(pipe.vae_scale_factor)
    store.begin(len(generators), config.uses_cfg, (height // scale, width // scale))

    def _on_step_end(_pipe: Any, _step: int, _timestep: Any, tensors: dict) -> dict:
        store.next_step()
        return tensors

    with CrossAttentionTracer(pipe.unet, store):
        output = pipe(
            list(prompts),
            height=height,
            width=width,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale,
            negative_prompt=negatives,
            num_images_per_prompt=per_prompt,
            generator=generators,
            output_type="np",
            callback_on_step_end=_on_step_end,
        )
    maps = store.global_maps()
    samples = []
    for p, prompt in enumerate(prompts):
        tokenized = tokenize_prompt(pipe.tokenizer, prompt)
        rows = len(tokenized.tokens) + 2
        for k in range(per_prompt):
            i = p * per_prompt + k
            samples.append(
                TracedSample(
                    prompt_index=p,
                    image_index=k,
                    seed=image_seed(int(seeds[p]), k),
                    image=output.images[i],
                    heat_map=GlobalHeatMap(pipe.tokenizer, tokenized, maps[i, :rows]),
                )
            )
    return samples

"""``ColourWorldPipeline``: the colour-world model as a diffusers ``DiffusionPipeline``.

Components ``unet`` (``ColourWorldUNet``), ``text_encoder`` (``ColourWorldTextEncoder``) and
``tokenizer`` (``ColourWorldTokenizer``); ``save_pretrained``/``from_pretrained`` use an ordinary
diffusers folder (``model_index.json``, safetensors). It is called like ``StableDiffusionPipeline``
(prompts, ``height``, ``width``, ``num_inference_steps``, ``guidance_scale``, ``negative_prompt``,
``num_images_per_prompt``, ``generator`` (one or one per image), ``output_type`` ``"np"``/``"pil"``/
``"pt"``, ``callback_on_step_end``) and samples with deterministic DDIM (eta 0) on the model's
continuous cosine schedule, ``num_inference_steps`` (default 20) steps from t = 1 to t = 0.

Guidance: the model is meant to be sampled **without CFG** (``guidance_scale <= 1``, the default
1.0: one conditional UNet call per step); the study measured that guidance hurts (w = 2: 40 %
colour-correct, w = 3: 6 %). ``guidance_scale > 1`` still works, SD-style (batch [unconditional,
conditional]; unconditional = the null slot only, or the negative prompt when one is given).

``vae_scale_factor`` is the patch size (2): there is no VAE, and the project's latent grid of a
32x32 image is the 16x16 patch grid at which the first cross-attention layers work. A prompt with
a word outside the vocabulary raises ``ValueError`` naming it; a prompt of more than 7 words
raises ``ValueError``; shorter prompts in the vocabulary are accepted (the model was trained only
on "a C1 S1 and a C2 S2").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .model import ColourWorldTextEncoder, ColourWorldUNet, alpha_sigma
from .tokenizer import ColourWorldTokenizer


class ColourWorldPipeline(DiffusionPipeline):
    """Text-to-image for the colour world (see the module docstring)."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: ColourWorldUNet, text_encoder: ColourWorldTextEncoder, tokenizer: ColourWorldTokenizer):
        super().__init__()
        # eval mode as after from_pretrained: in training mode SDPA takes another kernel (1e-6 apart)
        unet.eval()
        text_encoder.eval()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.unet.config.patch_size)

    def encode_prompt(
        self, prompts: Sequence[str | None], unconditional: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and key mask for ``prompts``; ``None``/empty prompts (and all, with
        ``unconditional``) see only the null slot."""
        max_words = int(self.text_encoder.config.max_words)
        rows = []
        for prompt in prompts:
            ids = self.tokenizer.word_ids(prompt) if prompt else []
            if len(ids) > max_words:
                raise ValueError(f"prompt {prompt!r} has {len(ids)} words; colour-world takes at most {max_words}")
            rows.append(ids)
        device = self.unet.device
        ids = torch.zeros(len(rows), max_words, dtype=torch.long)
        mask = torch.zeros(len(rows), max_words, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        drop = torch.full((len(rows),), unconditional, dtype=torch.bool)
        return self.text_encoder(ids.to(device), mask.to(device), drop.to(device))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.0,
        negative_prompt: str | Sequence[str | None] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> Any:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        size = int(self.unet.config.sample_size) * self.vae_scale_factor
        height, width = height or size, width or size
        if height % 8 or width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {height}x{width}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        n = len(prompts) * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"got {len(generator)} generators for {n} images")
        device = self.unet.device
        dtype = self.unet.dtype
        repeat = [p for p in prompts for _ in range(num_images_per_prompt)]
        context, key_mask = self.encode_prompt(repeat)
        cfg = guidance_scale > 1.0
        if cfg:
            if negative_prompt is None:
                negatives: list[str | None] = [None] * len(prompts)
            elif isinstance(negative_prompt, str):
                negatives = [negative_prompt] * len(prompts)
            else:
                negatives = list(negative_prompt)
            neg = [q for q in negatives for _ in range(num_images_per_prompt)]
            u_context, u_mask = self.encode_prompt(neg)
            context = torch.cat([u_context, context])
            key_mask = torch.cat([u_mask, key_mask])
        shape = (n, int(self.unet.config.in_channels), height, width)
        x = latents.to(device, dtype) if latents is not None else randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        times = torch.linspace(1, 0, num_inference_steps + 1, dtype=torch.float32)
        x0 = x
        for i in self.progress_bar(range(num_inference_steps)):
            t = times[i]
            a, s = alpha_sigma(t)
            model_in = torch.cat([x, x]) if cfg else x
            v = self.unet(model_in, t.to(device, dtype), context, key_mask)
            if cfg:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
            x0 = (a * x - s * v).clamp(-1, 1)
            eps = s * x + a * v
            a_next, s_next = alpha_sigma(times[i + 1])
            x = a_next * x0 + s_next * eps
            if callback_on_step_end is not None:
                tensors = {k: {"latents": x}[k] for k in callback_on_step_end_tensor_inputs}
                result = callback_on_step_end(self, i, t, tensors)
                x = result.pop("latents", x)
        images = ((x0 + 1) / 2).clamp(0, 1)
        if output_type == "pt":
            out: Any = images
        else:
            arr = images.permute(0, 2, 3, 1).float().cpu().numpy()
            out = self.numpy_to_pil(arr) if output_type == "pil" else arr.astype(np.float32)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (out,)
        return ImagePipelineOutput(images=out)


def load_world(folder: str | Path) -> DiffusionPipeline:
    """A colour-world folder's pipeline, ``ColourWorldPipeline`` or ``ColourWorldDiTPipeline`` by
    its ``model_index.json`` (progress bars off)."""
    name = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    if name == "ColourWorldDiTPipeline":
        from .dit import ColourWorldDiTPipeline

        pipe: DiffusionPipeline = ColourWorldDiTPipeline.from_pretrained(folder)
    elif name == "ColourWorldPipeline":
        pipe = ColourWorldPipeline.from_pretrained(folder)
    else:
        raise ValueError(f"{folder} holds a {name}, not a colour world")
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""Colour-world DAAM against the truth: prompt fidelity and colour-word mIoU on generated images.

``python -m transforms.colour_world.evaluate MODEL_DIR [--per-prompt N] [--json OUT]`` generates
``N`` images of each of the 12 held-out prompts with the project's ``generate_traced`` (DDIM, 20
steps unless ``--steps``, no CFG), derives the truth from the pixels (``scenes.colour_masks``: nearest palette
colour) and reports:

- fidelity: ``both_colours_present`` (each named colour covers >= 25 px) and ``colour_correct``
  (additionally each named colour is one blob holding >= 80 % of its pixels, and other palette
  colours cover < 10 px), as fractions of the images;
- on colour-correct images, per object: the colour word's DAAM map (the global map row, bicubic
  to 32x32, clamped >= 0) thresholded at ``tau * max`` (``colour_miou``, tau = 0.4) and at
  ``min + tau * (max - min)`` (``colour_miou_minmax``); the same for the shape noun
  (``noun_miou``); and the trivial baselines (``whole_image_miou``, ``centre_disc_miou``: a disc
  of radius 10 px at the centre);
- with ``baseline`` (a pipeline with other weights, e.g. ``train.build_untrained()``): the same
  colour-word mIoU of that model's DAAM on the *same* images, re-noised to each DDIM timestep
  with fixed noise and passed once through its UNet conditionally (``renoise_maps``):
  ``baseline_colour_miou``; and ``renoise_colour_miou``, the evaluated model on the same footing.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from transforms.attribution.config import GenerationConfig, SegmentationConfig
from transforms.attribution.generate import generate_traced
from transforms.attribution.store import HeatMapStore
from transforms.attribution.tracer import CrossAttentionTracer

from .model import alpha_sigma
from .segmentation_data import colour_vocabulary, label_miou, pseudo_labels, truth_labels
from .scenes import COLOUR_NAMES, COLOUR_POSITIONS, HELD_OUT_PROMPTS, RESOLUTION, ScenePrompt, pixel_labels

TAU = 0.4
STEPS = 20
MIN_OBJECT_PIXELS = 25
BLOB_FRACTION = 0.8
MAX_STRAY_PIXELS = 10
CENTRE_DISC_RADIUS = 10


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (empty mask: all False)."""
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        comp, queue = [], deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            comp.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def check_image(image: np.ndarray, prompt: ScenePrompt) -> tuple[bool, bool, np.ndarray]:
    """(both named colours present, colour-correct, true masks ``(2, H, W)`` of the two colours)."""
    labels = pixel_labels(image)
    named = [1 + COLOUR_NAMES.index(c) for c in prompt.colours]
    masks = np.stack([labels == k for k in named])
    present = all(int(m.sum()) >= MIN_OBJECT_PIXELS for m in masks)
    correct = present and all(largest_component(m).sum() >= BLOB_FRACTION * m.sum() for m in masks)
    stray = sum(int((labels == k).sum()) for k in range(1, 1 + len(COLOUR_NAMES)) if k not in named)
    return present, correct and stray < MAX_STRAY_PIXELS, masks


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = int((pred | truth).sum())
    return int((pred & truth).sum()) / union if union else math.nan


def upsampled(word_map: torch.Tensor, size: int = RESOLUTION) -> np.ndarray:
    """A ``(h, w)`` map bicubic to ``size x size``, clamped >= 0 (numpy)."""
    up = F.interpolate(word_map[None, None].float(), size=(size, size), mode="bicubic", align_corners=False)
    return up[0, 0].clamp(min=0).numpy()


def centre_disc(radius: float = CENTRE_DISC_RADIUS, size: int = RESOLUTION) -> np.ndarray:
    c = np.arange(size) + 0.5 - size / 2
    return c[:, None] ** 2 + c[None, :] ** 2 <= radius * radius


@torch.no_grad()
def renoise_maps(pipe: Any, images: np.ndarray, texts: Sequence[str], seed: int, steps: int = STEPS) -> torch.Tensor:
    """DAAM global maps ``(N, keys, 16, 16)`` of ``pipe`` on given images ``(N, 32, 32, 3)`` in
    [0, 1]: each image noised to every DDIM timestep with one fixed noise, one conditional UNet
    call per timestep, traced by the project's tracer and store."""
    x0 = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    context, key_mask = pipe.encode_prompt(list(texts))
    store = HeatMapStore()
    scale = int(pipe.vae_scale_factor)
    store.begin(len(texts), False, (x0.shape[2] // scale, x0.shape[3] // scale))
    times = torch.linspace(1, 0, steps + 1)
    with CrossAttentionTracer(pipe.unet, store):
        for i in range(steps):
            a, s = alpha_sigma(times[i])
            pipe.unet(a * x0 + s * noise, times[i], context, key_mask)
            store.next_step()
    return store.global_maps()


def _colour_ious(maps: torch.Tensor, rows: Sequence[int], truths: np.ndarray, tau: float) -> list[float]:
    out = []
    for k, row in enumerate(rows):
        heat = upsampled(maps[row])
        out.append(iou(heat > tau * heat.max(), truths[k]))
    return out


def evaluate(pipe: Any, prompts: Sequence[ScenePrompt] = HELD_OUT_PROMPTS, per_prompt: int = 2,
             seed: int = 1000, batch: int = 24, tau: float = TAU, baseline: Any = None,
             steps: int = STEPS) -> dict:
    """Generate ``per_prompt`` images of each prompt (seeds ``seed + i``) and score them."""
    config = GenerationConfig(steps=steps, guidance_scale=1.0, images_per_prompt=per_prompt)
    scores: dict[str, list[float]] = {k: [] for k in (
        "colour_miou", "colour_miou_minmax", "noun_miou", "whole_image_miou", "centre_disc_miou",
        "colour_hotter_on_own_object", "renoise_colour_miou", "baseline_colour_miou")}
    n = present = correct = 0
    segmentation = SegmentationConfig(colour_vocabulary(), refine=False)  # no self-attention to refine with
    pseudo_maps: list[np.ndarray] = []
    true_maps: list[np.ndarray] = []
    disc = centre_disc()
    prompts = list(prompts)
    step = max(1, batch // per_prompt)
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        seeds = [seed + start + i for i in range(len(chunk))]
        samples = generate_traced(pipe, [p.text for p in chunk], seeds, config, segmentation=segmentation)
        pseudo_maps.extend(pseudo_labels(sample) for sample in samples)
        true_maps.extend(truth_labels(sample.image) for sample in samples)
        kept: list[tuple[Any, ScenePrompt, np.ndarray]] = []
        for sample in samples:
            prompt = chunk[sample.prompt_index]
            ok_present, ok_correct, truths = check_image(sample.image, prompt)
            n += 1
            present += ok_present
            correct += ok_correct
            if not ok_correct:
                continue
            kept.append((sample, prompt, truths))
            for k in (0, 1):
                truth, other = truths[k], truths[1 - k]
                heat = upsampled(sample.heat_map.word_map(prompt.colours[k]))
                scores["colour_miou"].append(iou(heat > tau * heat.max(), truth))
                lo, hi = heat.min(), heat.max()
                scores["colour_miou_minmax"].append(iou(heat > lo + tau * (hi - lo), truth))
                scores["colour_hotter_on_own_object"].append(float(heat[truth].mean() > heat[other].mean()))
                noun = upsampled(sample.heat_map.word_map(prompt.shapes[k]))
                scores["noun_miou"].append(iou(noun > tau * noun.max(), truth))
                scores["whole_image_miou"].append(iou(np.ones_like(truth), truth))
                scores["centre_disc_miou"].append(iou(disc, truth))
        if baseline is not None and kept:
            images = np.stack([k[0].image for k in kept])
            texts = [k[1].text for k in kept]
            rows = [1 + i for i in COLOUR_POSITIONS]  # the colour words' rows (null slot first)
            for name, model in (("renoise_colour_miou", pipe), ("baseline_colour_miou", baseline)):
                maps = renoise_maps(model, images, texts, seed + 5000 + start, steps)
                for b, (_, _, truths) in enumerate(kept):
                    scores[name].extend(_colour_ious(maps[b], rows, truths, tau))
    labels = label_miou(np.stack(pseudo_maps), np.stack(true_maps)) if pseudo_maps else None
    result: dict[str, Any] = {
        "images": n,
        # the run's --classes colours --no-refine label maps against the pixels, on every image
        "pseudo_mask_miou": labels["background_included"]["mean_iou"] if labels else math.nan,
        "pseudo_mask_miou_no_background": labels["background_excluded"]["mean_iou"] if labels else math.nan,
        "both_colours_present": present / n if n else math.nan,
        "colour_correct": correct / n if n else math.nan,
        "objects_scored": len(scores["colour_miou"]),
        "tau": tau,
        "steps": steps,
        "guidance_scale": 1.0,
    }
    for key, values in scores.items():
        result[key] = float(np.nanmean(values)) if values else math.nan
    return result


def untrained_baseline(pipe: Any) -> Any:
    """The same UNet form (with or without self-attention) at initialisation, on ``pipe``'s
    device; ``None`` for the DiT world (re-noising is UNet-only)."""
    from .pipeline import ColourWorldPipeline
    from .tokenizer import ColourWorldTokenizer
    from .train import build_untrained, form_block

    if not isinstance(pipe, ColourWorldPipeline):
        return None
    untrained = build_untrained(block=form_block("sa" if pipe.unet.config.self_attention else "unet"))
    return ColourWorldPipeline(untrained.unet, untrained.text_encoder, ColourWorldTokenizer()).to(pipe.device)


def main(argv: list[str] | None = None) -> int:
    from .pipeline import load_world

    parser = argparse.ArgumentParser(prog="python -m transforms.colour_world.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a ColourWorldPipeline or ColourWorldDiTPipeline folder")
    parser.add_argument("--per-prompt", type=int, default=2, help="images per held-out prompt (12 prompts)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="skip the untrained-model baseline")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"sampling steps (default {STEPS})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_world(args.model)
    baseline = None if args.no_baseline else untrained_baseline(pipe)
    result = evaluate(pipe, per_prompt=args.per_prompt, seed=args.seed, baseline=baseline, steps=args.steps)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

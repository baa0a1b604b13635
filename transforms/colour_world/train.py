"""Train the colour-world model on CPU: ``python -m transforms.colour_world.train --out DIR --minutes M``.

The study's recipe: v-prediction on the cosine schedule, 30 % of timesteps from U(0, 0.35) (low
noise) and the rest uniform, 10 % condition dropout (only the null slot visible), AdamW lr 1e-3
with a 200-step linear warm-up, no weight decay, batch 48, gradient clipping at 1, EMA 0.999
(warm-started as ``min(0.999, (1 + step) / (10 + step))``). Scenes come from the 60 training
prompts (``scenes.TRAIN_PROMPTS``).

Deterministic: fixed seeds for the weights, scenes (``random.Random``) and noise (torch), so a
run from scratch repeats up to float summation order (the thread count may change it: with
``--threads 0`` it is chosen adaptively, 1 or 2, every 200 steps by timing both).
``--minutes`` is the total training time budget: a run with ``--resume`` continues from
``DIR/checkpoint.pt`` (model, EMA, optimizer, step, elapsed time, rng states) until the total
reaches it. A checkpoint is written every ``--checkpoint-minutes`` (5) and at the end; the end
also writes the EMA weights as a pipeline folder ``DIR/pipeline`` (safetensors) and
``DIR/train_summary.json``. ``--export-checkpoint`` writes both from the last checkpoint of a
stopped run without training.

``--decay-steps N`` (with ``--resume``) ends a run with a learning-rate decay: from the resume
step the LR follows a cosine from ``LR`` down to ``LR * DECAY_FINAL`` over the next ``N`` steps,
and training stops when they are done (``--minutes`` is then optional). The schedule (start step,
length, floor) is stored in the checkpoint and the summary, so a later ``--resume`` keeps it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import STUDY_BLOCK, ColourWorldTextEncoder, ColourWorldUNet, alpha_sigma
from . import dit
from .pipeline import ColourWorldPipeline
from .scenes import TRAIN_PROMPTS, sample_scenes
from .tokenizer import ColourWorldTokenizer

logger = logging.getLogger("transforms.colour_world.train")

WEIGHT_SEED = 0
SCENE_SEED = 123
NOISE_SEED = 1
BATCH = 48
LR = 1e-3
WARMUP = 200
EMA_DECAY = 0.999
LOW_NOISE_FRACTION = 0.3
LOW_NOISE_MAX_T = 0.35
CONDITION_DROPOUT = 0.1
LOG_EVERY = 50
DECAY_FINAL = 0.01


def learning_rate(step: int, decay: dict | None = None) -> float:
    """The LR of the step with index ``step``: the linear warm-up to ``LR``, then constant, or with
    ``decay`` (``start``, ``steps``, ``final``) a cosine from ``LR`` at ``start`` to
    ``LR * final`` at ``start + steps``."""
    lr = LR * min(1.0, (step + 1) / WARMUP)
    if decay is None or step < decay["start"]:
        return lr
    done = min(1.0, (step - decay["start"]) / decay["steps"])
    return lr * (decay["final"] + (1 - decay["final"]) * 0.5 * (1 + math.cos(math.pi * done)))


class Denoiser(torch.nn.Module):
    """The trained pair (text encoder, UNet) as one module, for the optimiser and the EMA."""

    def __init__(self, text_encoder: ColourWorldTextEncoder, unet: ColourWorldUNet) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet
        self.tokenizer = ColourWorldTokenizer()

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        context, key_mask = self.text_encoder(ids, unconditional=drop)
        return self.unet(x, t, context, key_mask)

    def prompt_ids(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(B, 7)`` of training prompts."""
        return torch.tensor([self.tokenizer.word_ids(text) for text in texts])

    def loss(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The v-prediction MSE on one batch (draws t, noise and dropout from torch's global rng)."""
        b = x.shape[0]
        t = training_times(b)
        a, s = (v[:, None, None, None] for v in alpha_sigma(t))
        noise = torch.randn_like(x)
        drop = torch.rand(b) < CONDITION_DROPOUT
        out = self(a * x + s * noise, t, ids, drop)
        return F.mse_loss(out, a * noise - s * x)

    def save_pipeline(self, folder: Path) -> None:
        """Save with the tokenizer as a ``ColourWorldPipeline`` folder (safetensors)."""
        pipe = ColourWorldPipeline(unet=copy.deepcopy(self.unet), text_encoder=copy.deepcopy(self.text_encoder),
                                   tokenizer=ColourWorldTokenizer())
        pipe.save_pretrained(folder, safe_serialization=True)


class DiTDenoiser(torch.nn.Module):
    """The ``colour-world-dit`` pair (layer-less T5 side, Flux transformer) as one module."""

    def __init__(self, text_encoder: torch.nn.Module, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.transformer = transformer
        self.tokenizer = dit.build_piece_tokenizer()
        self.register_buffer("img_ids", dit.image_ids(), persistent=False)
        self.register_buffer("txt_ids", torch.zeros(dit.TEXT_TOKENS, 3), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Velocity ``(B, 3, 32, 32)`` (noise - image) at flow time ``t`` (0 clean, 1 noise), as
        ``FluxPipeline`` calls the transformer."""
        context = self.text_encoder(ids)[0]
        pooled = torch.zeros(x.shape[0], dit.CLIP_DIM)
        out = self.transformer(dit.pack_pixels(x), encoder_hidden_states=context, pooled_projections=pooled,
                               timestep=t, img_ids=self.img_ids, txt_ids=self.txt_ids, return_dict=False)[0]
        return dit.ColourWorldDiTPipeline._unpack_latents(out, x.shape[2], x.shape[3], 1)

    def prompt_ids(self, texts: list[str]) -> torch.Tensor:
        """T5-side ids ``(B, 16)`` of training prompts, padded as the pipeline pads them."""
        return self.tokenizer(texts, padding="max_length", max_length=dit.TEXT_TOKENS, return_tensors="pt").input_ids

    def loss(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The rectified-flow MSE on one batch (no condition dropout: the world is sampled without CFG)."""
        t = training_times(x.shape[0])
        noise = torch.randn_like(x)
        tt = t[:, None, None, None]
        return F.mse_loss(self((1 - tt) * x + tt * noise, t, ids), noise - x)

    def save_pipeline(self, folder: Path) -> None:
        """Save as a ``ColourWorldDiTPipeline`` folder (safetensors)."""
        pipe = dit.build_dit_pipeline(copy.deepcopy(self.transformer), copy.deepcopy(self.text_encoder))
        pipe.save_pretrained(folder, safe_serialization=True)


def training_times(b: int) -> torch.Tensor:
    """``LOW_NOISE_FRACTION`` of the times from U(0, ``LOW_NOISE_MAX_T``), the rest uniform."""
    return torch.where(torch.rand(b) < LOW_NOISE_FRACTION, torch.rand(b) * LOW_NOISE_MAX_T, torch.rand(b))


# Checkpoints written before the block was recorded hold diffusers' default ResnetBlock2D.
DIFFUSERS_BLOCK = {"resnet_time_act": True, "resnet_eps": 1e-6}
DIT_FORM = {"form": "dit"}
FORMS = ("unet", "sa", "dit")


def form_block(form: str) -> dict:
    """The checkpoint's ``block`` record of a form: the UNet options, or ``DIT_FORM``."""
    if form == "dit":
        return dict(DIT_FORM)
    return {**STUDY_BLOCK, **({"self_attention": True} if form == "sa" else {})}


def build_untrained(seed: int = WEIGHT_SEED, block: dict | None = None) -> Denoiser | DiTDenoiser:
    """The model at initialisation (deterministic under ``seed``); ``block``: the UNet's resnet
    options (default ``STUDY_BLOCK``), or ``DIT_FORM`` for the MM-DiT."""
    if block is not None and block.get("form") == "dit":
        tokenizer = dit.build_piece_tokenizer()
        text_encoder = dit.build_text_encoder(len(tokenizer), seed)
        return DiTDenoiser(text_encoder, dit.build_dit_transformer(seed + 1))
    torch.manual_seed(seed)
    text_encoder = ColourWorldTextEncoder()
    unet = ColourWorldUNet(**(STUDY_BLOCK if block is None else block))
    return Denoiser(text_encoder, unet)


def checkpoint_block(state: dict) -> dict:
    """The resnet options (or ``DIT_FORM``) a checkpoint was trained with."""
    return state.get("block", DIFFUSERS_BLOCK)


def training_batch(rng: random.Random, model: Denoiser | DiTDenoiser, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, 32, 32)`` in [-1, 1] and the model's token ids of random training scenes."""
    prompts, images, _ = sample_scenes(TRAIN_PROMPTS, batch, rng)
    x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    return x, model.prompt_ids([p.text for p in prompts])


def save_pipeline(model: Denoiser | DiTDenoiser, folder: Path) -> None:
    """Save ``model`` as its pipeline folder (safetensors)."""
    model.save_pipeline(folder)


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(out: Path, minutes: float, resume: bool = False, batch: int = BATCH, threads: int = 0,
          checkpoint_minutes: float = 5.0, max_steps: int | None = None, form: str = "unet",
          decay_steps: int | None = None) -> dict:
    """Train until ``minutes`` of total training time (or ``max_steps`` steps in all); returns the
    summary written at the end. ``form``: ``unet`` (colour-world), ``sa`` (colour-world-sa: a
    self-attention before each cross-attention) or ``dit`` (colour-world-dit); a resumed run keeps
    its checkpoint's form. ``decay_steps``: start a cosine LR decay at the current step that ends
    (and stops training) ``decay_steps`` later; a checkpoint that holds a decay keeps it (a
    different ``decay_steps`` is refused)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    state = torch.load(ckpt_path, weights_only=False) if resume and ckpt_path.exists() else None
    block = form_block(form) if state is None else checkpoint_block(state)
    model = build_untrained(block=block)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    rng = random.Random(SCENE_SEED)
    torch.manual_seed(NOISE_SEED)
    step, elapsed, losses, schedule = 0, 0.0, [], None
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed, losses, schedule = state["step"], state["elapsed"], state["losses"], state.get("decay")
        rng.setstate(state["scene_rng"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed from %s at step %d (%.1f min trained)", ckpt_path, step, elapsed / 60)
    elif resume:
        logger.info("no checkpoint in %s: starting from scratch", out)
    if decay_steps is not None:
        if schedule is None:
            schedule = dict(start=step, steps=int(decay_steps), final=DECAY_FINAL)
        elif schedule["steps"] != decay_steps:
            raise ValueError(f"the checkpoint holds a decay of {schedule['steps']} steps from step {schedule['start']}")
    if schedule is not None:
        end = schedule["start"] + schedule["steps"]
        max_steps = end if max_steps is None else min(max_steps, end)
        logger.info("LR schedule: cosine from step %d to %d, down to %g of LR", schedule["start"], end, schedule["final"])
    logger.info("parameters: %d; %d training prompts; batch %d", sum(p.numel() for p in model.parameters()),
                len(TRAIN_PROMPTS), batch)

    def checkpoint() -> None:
        _atomic_save(
            dict(model=model.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(), step=step,
                 elapsed=elapsed, losses=losses, block=block, decay=schedule, scene_rng=rng.getstate(),
                 torch_rng=torch.get_rng_state()),
            ckpt_path,
        )

    budget = minutes * 60
    chosen = threads or 1
    timings: dict[int, list[float]] = {1: [], 2: []}
    started = time.time() - elapsed
    last_checkpoint = time.time()
    while elapsed < budget and (max_steps is None or step < max_steps):
        phase = step % 200
        if threads:
            current = threads
        else:
            current = 1 if phase < 10 else 2 if phase < 20 else chosen
        torch.set_num_threads(current)
        t0 = time.time()
        x, ids = training_batch(rng, model, batch)
        loss = model.loss(x, ids)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, schedule)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        if not threads and phase < 20:
            timings[current].append(time.time() - t0)
            if phase == 19:
                chosen = 1 if sorted(timings[1])[5] <= sorted(timings[2])[5] else 2
                timings = {1: [], 2: []}
        step += 1
        losses.append(float(loss.item()))
        elapsed = time.time() - started
        if step % LOG_EVERY == 0:
            recent = losses[-LOG_EVERY:]
            logger.info("step %d  %.1f/%.0f min  loss %.4f  %.2f steps/s  threads %d", step, elapsed / 60, minutes,
                        sum(recent) / len(recent), step / max(elapsed, 1e-9), current)
        if time.time() - last_checkpoint > checkpoint_minutes * 60:
            checkpoint()
            last_checkpoint = time.time()
            logger.info("checkpoint at step %d", step)
    checkpoint()
    save_pipeline(ema, out / "pipeline")
    tail = losses[-200:]
    summary = dict(steps=step, minutes=round(elapsed / 60, 2), batch=batch, form=dict(block),
                   final_loss=round(sum(tail) / max(len(tail), 1), 5),
                   first_loss=round(sum(losses[:50]) / max(len(losses[:50]), 1), 5))
    if schedule is not None:
        summary["decay"] = dict(schedule)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("done: %s", summary)
    return summary


def export_checkpoint(out: Path) -> dict:
    """Write ``out/pipeline`` (the EMA weights) and ``out/train_summary.json`` from
    ``out/checkpoint.pt``, e.g. of a run that was stopped; returns the summary."""
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    ema = build_untrained(block=checkpoint_block(state))
    ema.load_state_dict(state["ema"])
    save_pipeline(ema, out / "pipeline")
    losses = state["losses"]
    tail = losses[-200:]
    summary = dict(steps=state["step"], minutes=round(state["elapsed"] / 60, 2), batch=BATCH,
                   final_loss=round(sum(tail) / max(len(tail), 1), 5),
                   first_loss=round(sum(losses[:50]) / max(len(losses[:50]), 1), 5), from_checkpoint=True)
    if state.get("decay") is not None:
        summary["decay"] = dict(state["decay"])
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transforms.colour_world.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt, pipeline/ and the summary")
    parser.add_argument("--minutes", type=float, help="total training time budget (required to train)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--threads", type=int, default=0, choices=(0, 1, 2), help="torch threads (0: adaptive)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--max-steps", type=int, default=None, help="stop at this many steps in all")
    parser.add_argument("--form", choices=FORMS, default="unet",
                        help="unet: colour-world; sa: colour-world-sa (a self-attention before each cross-attention); "
                             "dit: colour-world-dit (a Flux-shaped MM-DiT)")
    parser.add_argument("--decay-steps", type=int, default=None,
                        help="cosine-decay the LR to LR/100 over this many steps from the resume point, then stop")
    parser.add_argument("--export-checkpoint", action="store_true",
                        help="do not train: write OUT/pipeline and the summary from OUT/checkpoint.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.export_checkpoint:
        logger.info("exported: %s", export_checkpoint(args.out))
        return 0
    if args.minutes is None and args.decay_steps is None:
        parser.error("--minutes is required to train (or --decay-steps)")
    if args.decay_steps is not None and args.decay_steps < 1:
        parser.error("--decay-steps must be positive")
    minutes = math.inf if args.minutes is None else args.minutes
    train(args.out, minutes, args.resume, args.batch, args.threads, args.checkpoint_minutes, args.max_steps,
          args.form, args.decay_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

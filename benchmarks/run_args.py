"""The command line the generation benchmarks of docs/performance.md share: model (a shape's
name, ``tiny`` or a folder), size, steps, batch, repeats, torch threads, device; and the loaded
pipeline it names."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks import shapes
from benchmarks.common import resolve_device
from transforms.models.loading import ModelSpec, load_pipeline


def generation_parser(doc: str, model: str, size: int, steps: int, batch_size: int = 1) -> argparse.ArgumentParser:
    """A parser with the shared flags and these defaults (``--threads`` 1: CPU seconds need it)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=model, help=f"a model folder, a built-in model, or a shape: {', '.join(shapes.SHAPES)}")
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds are this process's work)")
    parser.add_argument("--device", default="auto")
    return parser


@dataclass
class Loaded:
    """What the flags name: the device, the shape (``None`` for a folder or built-in), the folder
    or built-in name loaded, the pipeline, and a short label for result names."""

    device: str
    shape: str | None
    model: str
    pipe: Any

    @property
    def label(self) -> str:
        return self.shape or (self.model if self.model == "tiny" else "model")


def load(args: argparse.Namespace) -> Loaded:
    """Set the torch threads and load the model the flags name on their device."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = args.model if args.model in shapes.SHAPES else None
    model = str(shapes.saved(shape)) if shape else args.model
    return Loaded(device, shape, model, load_pipeline(ModelSpec(model, device=device)))

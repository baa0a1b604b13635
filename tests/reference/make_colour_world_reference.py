"""Record the shipped colour-world model's reference output (image + DAAM maps).

Usage (from the repository root, in the project's venv)::

    .venv/bin/python tests/reference/make_colour_world_reference.py

Writes ``colour_world_reference.npz`` next to this script: for each case (``CASES``), the image
``case{i}/image`` float32 (32, 32, 3) and the global map ``case{i}/maps`` float32 (9, 16, 16) of
``generate_traced`` on the shipped weights (``transforms.colour_world.assets``), CPU, one torch
thread, DDIM 20 steps, no CFG. ``tests/unit/test_colour_world_assets.py`` reproduces them bit for
bit. Rerun only when the shipped weights change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from transforms.attribution.config import GenerationConfig
from transforms.attribution.generate import generate_traced
from transforms.colour_world.assets import shipped_model_path
from transforms.colour_world.pipeline import ColourWorldPipeline

CASES = [("a red circle and a blue square", 0), ("a yellow triangle and a green circle", 7)]
OUT = Path(__file__).with_name("colour_world_reference.npz")


def reference_samples() -> list:
    """The reference cases' samples, generated as the test does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = ColourWorldPipeline.from_pretrained(shipped_model_path())
        pipe.set_progress_bar_config(disable=True)
        config = GenerationConfig(steps=20, guidance_scale=1.0)
        return [generate_traced(pipe, [text], [seed], config)[0] for text, seed in CASES]
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    arrays = {}
    for i, sample in enumerate(reference_samples()):
        arrays[f"case{i}/image"] = sample.image.astype(np.float32)
        arrays[f"case{i}/maps"] = sample.heat_map.maps.numpy().astype(np.float32)
    np.savez_compressed(OUT, **arrays)
    manifest = json.loads((shipped_model_path().parent / "manifest.json").read_text())
    OUT.with_suffix(".json").write_text(json.dumps({"cases": CASES, "weights_sha256": manifest["sha256"]}, indent=1) + "\n")
    print(OUT, OUT.stat().st_size)


if __name__ == "__main__":
    main()

"""Record a shipped world's reference output (image + DAAM maps).

Usage (from the repository root, in the project's venv)::

    .venv/bin/python tests/reference/make_colour_world_reference.py [--world colour-world-sa]

Writes ``<folder>_reference.npz`` next to this script (``colour_world_reference.npz`` for
``colour-world``): for each case (``CASES``), the image ``case{i}/image`` float32 (32, 32, 3) and
the global map ``case{i}/maps`` float32 of ``generate_traced`` on the shipped weights
(``transforms.colour_world.assets``), CPU, one torch thread, 20 steps, no CFG; and
``<folder>_reference.json`` with the weights' sha256, torch's version, the CPU kernels
(``torch.backends.cpu.get_cpu_capability``) and the CPU model. ``tests/unit/test_colour_world_assets.py``
reproduces them bit for bit where all three are the recorded ones (float summation order differs
between kernels and CPU models, and 20 steps amplify it), to 1e-3 elsewhere. Rerun only when the
shipped weights change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from transforms.attribution.config import GenerationConfig
from transforms.attribution.generate import generate_traced
from transforms.colour_world.assets import COLOUR_WORLD, SHIPPED_WORLDS, shipped_model_path
from transforms.colour_world.pipeline import load_world

CASES = [("a red circle and a blue square", 0), ("a yellow triangle and a green circle", 7)]
HERE = Path(__file__).parent


def reference_path(world: str = COLOUR_WORLD) -> Path:
    """Where a world's reference arrays are (``.json`` beside them)."""
    return HERE / f"{SHIPPED_WORLDS[world]}_reference.npz"


def machine() -> dict[str, str]:
    """What bit-for-bit equality depends on: torch's version, its CPU kernels and the processor
    (the same kernels schedule differently on another CPU model)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_model()}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def reference_samples(world: str = COLOUR_WORLD) -> list:
    """The reference cases' samples, generated as the test does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_world(shipped_model_path(world))
        config = GenerationConfig(steps=20, guidance_scale=1.0)
        return [generate_traced(pipe, [text], [seed], config)[0] for text, seed in CASES]
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", choices=tuple(SHIPPED_WORLDS), default=COLOUR_WORLD)
    world = parser.parse_args().world
    arrays = {}
    for i, sample in enumerate(reference_samples(world)):
        arrays[f"case{i}/image"] = sample.image.astype(np.float32)
        arrays[f"case{i}/maps"] = sample.heat_map.maps.numpy().astype(np.float32)
    out = reference_path(world)
    np.savez_compressed(out, **arrays)
    manifest = json.loads((shipped_model_path(world).parent / "manifest.json").read_text())
    meta = {"cases": CASES, "weights_sha256": manifest["sha256"], **machine()}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(out, out.stat().st_size)


if __name__ == "__main__":
    main()

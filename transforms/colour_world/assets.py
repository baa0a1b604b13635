"""The shipped truth worlds' weights: pipeline folders in package data, checked by sha256.

Each world of ``SHIPPED_WORLDS`` (``colour-world``: the UNet; ``colour-world-sa``: the UNet with a
self-attention before each cross-attention; ``colour-world-dit``: the Flux-shaped MM-DiT) has a
folder ``transforms/assets/<folder>/``: ``pipeline/`` (a ``ColourWorldPipeline`` or
``ColourWorldDiTPipeline`` folder, safetensors) and ``manifest.json``, which records the sha256
of each file, one ``sha256`` over them all (of the sorted ``"<sha256>  <path>\\n"`` lines), the
training summary and the measured evaluation. ``shipped_model_path(world)`` returns the folder
after checking every hash (``ValueError`` on a mismatch, ``FileNotFoundError`` when the weights
are not installed), so ``from_pretrained(shipped_model_path(world))`` loads them offline.

``python -m transforms.colour_world.assets export TRAIN_DIR --world NAME`` copies
``TRAIN_DIR/pipeline`` here and writes the manifest with ``TRAIN_DIR/train_summary.json`` (and
``TRAIN_DIR/evaluation.json`` when present).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

PIPELINE_FOLDER = "pipeline"
MANIFEST = "manifest.json"
COLOUR_WORLD = "colour-world"
# ``--model`` name -> folder under transforms/assets
SHIPPED_WORLDS = {COLOUR_WORLD: "colour_world", "colour-world-sa": "colour_world_sa", "colour-world-dit": "colour_world_dit"}


def asset_root(world: str = COLOUR_WORLD) -> Path:
    """``transforms/assets/<folder>`` of a shipped world in the installed package."""
    if world not in SHIPPED_WORLDS:
        raise ValueError(f"no shipped world {world!r}: choose one of {', '.join(SHIPPED_WORLDS)}")
    return Path(str(resources.files("transforms").joinpath("assets", SHIPPED_WORLDS[world])))


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by its POSIX path relative to ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def folder_sha256(hashes: dict[str, str]) -> str:
    """One sha256 over a folder's ``file_hashes`` (``sha256sum``-style lines, sorted by path)."""
    lines = "".join(f"{digest}  {path}\n" for path, digest in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def shipped_model_path(world: str = COLOUR_WORLD, root: Path | None = None) -> Path:
    """A shipped world's pipeline folder, every file's sha256 checked against the manifest."""
    root = root or asset_root(world)
    manifest_path = root / MANIFEST
    folder = root / PIPELINE_FOLDER
    if not manifest_path.exists() or not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"the {world} weights are not installed under {root}")
    manifest = json.loads(manifest_path.read_text())
    found = file_hashes(folder)
    if found != manifest["files"]:
        bad = sorted(k for k in set(found) | set(manifest["files"]) if found.get(k) != manifest["files"].get(k))
        raise ValueError(f"{world} weights under {folder} do not match {manifest_path}: {bad}")
    return folder


def export(train_dir: Path, world: str = COLOUR_WORLD, root: Path | None = None) -> dict:
    """Copy ``train_dir/pipeline`` into a world's assets and write the manifest; returns it."""
    root = root or asset_root(world)
    target = root / PIPELINE_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(train_dir / PIPELINE_FOLDER, target)
    hashes = file_hashes(target)
    manifest: dict = {
        "model": world,
        "sha256": folder_sha256(hashes),
        "files": hashes,
        "bytes": sum((target / p).stat().st_size for p in hashes),
    }
    for key, name in (("training", "train_summary.json"), ("evaluation", "evaluation.json")):
        if (train_dir / name).exists():
            manifest[key] = json.loads((train_dir / name).read_text())
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transforms.colour_world.assets")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="ship TRAIN_DIR/pipeline as package data with a manifest")
    exp.add_argument("train_dir", type=Path)
    ver = sub.add_parser("verify", help="check the shipped weights against the manifest")
    for command in (exp, ver):
        command.add_argument("--world", choices=tuple(SHIPPED_WORLDS), default=COLOUR_WORLD)
    args = parser.parse_args(argv)
    if args.command == "export":
        manifest = export(args.train_dir, args.world)
        print(json.dumps({k: manifest[k] for k in ("sha256", "bytes")}))
    else:
        print(shipped_model_path(args.world))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

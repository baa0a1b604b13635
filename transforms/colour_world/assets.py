"""The shipped colour-world weights: a pipeline folder in package data, checked by sha256.

``transforms/assets/colour_world/pipeline/`` is a ``ColourWorldPipeline`` folder (safetensors);
``transforms/assets/colour_world/manifest.json`` records the sha256 of each of its files, one
``sha256`` over them all (of the sorted ``"<sha256>  <path>\\n"`` lines), the training summary and
the measured evaluation. ``shipped_model_path()`` returns the folder after checking every hash
(``ValueError`` on a mismatch, ``FileNotFoundError`` when the weights are not installed), so
``ColourWorldPipeline.from_pretrained(shipped_model_path())`` loads them offline.

``python -m transforms.colour_world.assets export TRAIN_DIR`` copies ``TRAIN_DIR/pipeline`` here
and writes the manifest with ``TRAIN_DIR/train_summary.json`` (and ``TRAIN_DIR/evaluation.json``
when present).
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


def asset_root() -> Path:
    """``transforms/assets/colour_world`` of the installed package."""
    return Path(str(resources.files("transforms").joinpath("assets", "colour_world")))


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


def shipped_model_path(root: Path | None = None) -> Path:
    """The shipped pipeline folder, every file's sha256 checked against the manifest."""
    root = root or asset_root()
    manifest_path = root / MANIFEST
    folder = root / PIPELINE_FOLDER
    if not manifest_path.exists() or not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"the colour-world weights are not installed under {root}")
    manifest = json.loads(manifest_path.read_text())
    found = file_hashes(folder)
    if found != manifest["files"]:
        bad = sorted(k for k in set(found) | set(manifest["files"]) if found.get(k) != manifest["files"].get(k))
        raise ValueError(f"colour-world weights under {folder} do not match {manifest_path}: {bad}")
    return folder


def export(train_dir: Path, root: Path | None = None) -> dict:
    """Copy ``train_dir/pipeline`` into the assets and write the manifest; returns the manifest."""
    root = root or asset_root()
    target = root / PIPELINE_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(train_dir / PIPELINE_FOLDER, target)
    hashes = file_hashes(target)
    manifest: dict = {
        "model": "colour-world",
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
    sub.add_parser("verify", help="check the shipped weights against the manifest")
    args = parser.parse_args(argv)
    if args.command == "export":
        manifest = export(args.train_dir)
        print(json.dumps({k: manifest[k] for k in ("sha256", "bytes")}))
    else:
        print(shipped_model_path())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

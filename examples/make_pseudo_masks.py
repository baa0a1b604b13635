"""Turn a daam-datasets output into (image, pseudo-mask) PNG pairs for a segmentation trainer.

    python examples/make_pseudo_masks.py out/sample --classes cat dog horse bicycle --out out/masks

Each mask is a palette PNG: 0 background, i+1 = classes[i], 255 ignore (uncertain band).
Rows whose prompt names none of the classes are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datasets import load_dataset
from PIL import Image

from transforms.attribution.config import DEFAULT_THRESHOLD
from transforms.attribution.pseudo_masks import pseudo_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="output folder or hub id")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for row in load_dataset(args.dataset, split="train"):
        mask = pseudo_mask(row, args.classes, threshold=args.threshold)
        if not (mask[(mask != 0) & (mask != 255)]).size:
            continue
        row["image"].save(args.out / f"{row['id']}.jpg")
        Image.fromarray(mask, mode="L").save(args.out / f"{row['id']}_mask.png")
        written += 1
    print(f"{written} image/mask pairs in {args.out}")


if __name__ == "__main__":
    main()

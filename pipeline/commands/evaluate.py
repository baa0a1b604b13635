"""``daam-datasets evaluate``: DAAM maps against the truth of a model whose truth is known
(``--model colour-world``): prompt fidelity, colour-word mIoU, the noun words, baselines."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from transforms.model_family import COLOUR_WORLD, COLOUR_WORLD_MODEL_NAME, family_of
from transforms.model_loading import ModelSpec, load_pipeline, resolve_model_source

from .. import argtypes
from ..errors import UsageError

MAX_PER_PROMPT = 1000
TABLE = (
    ("images", "images generated (held-out prompts)"),
    ("colour_correct", "prompt fidelity: both colours right"),
    ("colour_miou", "colour-word DAAM mIoU (map > τ·max)"),
    ("colour_miou_minmax", "colour-word DAAM mIoU (min-max)"),
    ("noun_miou", "noun-word DAAM mIoU (expected to fail)"),
    ("pseudo_mask_miou", "pseudo-mask mIoU, colours as classes"),
    ("whole_image_miou", "baseline: whole image"),
    ("centre_disc_miou", "baseline: best centre disc"),
    ("baseline_colour_miou", "baseline: untrained model"),
)


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure DAAM maps against known truth (colour-world)",
        description="Generate N images of each of colour-world's 12 held-out prompts, derive the true "
        "object masks from the pixels (nearest palette colour) and report prompt fidelity, colour-word "
        "DAAM mIoU at τ = 0.4 (and the min-max variant), the noun words' mIoU and trivial baselines.",
    )
    argtypes.guard(parser)
    parser.add_argument("--model", default=COLOUR_WORLD_MODEL_NAME, help="'colour-world' (shipped weights) or a colour-world model folder")
    parser.add_argument("--n", type=argtypes.integer(1, MAX_PER_PROMPT), default=2, help="images per held-out prompt (default 2)")
    parser.add_argument("--seed", type=argtypes.integer(0, 2**62), default=1000, help="first seed (default 1000)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, …")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--no-baseline", action="store_true", help="skip the untrained-model baseline (faster)")
    parser.set_defaults(func=main, accepts_extra=False)


def table(result: dict[str, Any]) -> str:
    """The short report: one line per measure."""
    lines = []
    for key, label in TABLE:
        value = result.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        shown = f"{value:d}" if isinstance(value, int) else f"{value:.3f}"
        lines.append(f"{label:<44} {shown:>8}")
    return "\n".join(lines)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Evaluate and print the table (and write JSON with ``--json``)."""
    from transforms.colour_world.evaluate import evaluate

    source = resolve_model_source(args.model)
    if family_of(source).name != COLOUR_WORLD:
        raise UsageError(f"evaluate --model {args.model}: only colour-world models have a known truth")
    pipe = load_pipeline(ModelSpec(args.model, device=args.device))
    baseline = None
    if not args.no_baseline:
        from transforms.colour_world.pipeline import ColourWorldPipeline
        from transforms.colour_world.tokenizer import ColourWorldTokenizer
        from transforms.colour_world.train import build_untrained

        untrained = build_untrained()
        baseline = ColourWorldPipeline(untrained.unet, untrained.text_encoder, ColourWorldTokenizer()).to(pipe.device)
    result = evaluate(pipe, per_prompt=args.n, seed=args.seed, baseline=baseline)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(table(result))
    return 0

"""``daam-datasets evaluate``: maps against the truth of a model whose truth is known (the shipped
worlds ``colour-world``, ``colour-world-sa``, ``colour-world-dit`` or such a folder): prompt
fidelity, colour-word mIoU, the noun words, baselines; with ``--leaderboard`` every map method of
every world side by side (``transforms.colour_world.leaderboard``), as a table, JSON and a plot."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from transforms.models.family import COLOUR_WORLD_MODEL_NAME, SHIPPED_WORLDS, family_of
from transforms.models.loading import ModelSpec, load_pipeline, resolve_model_source

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
    parser.add_argument("--model", default=COLOUR_WORLD_MODEL_NAME, help=f"a shipped world ({', '.join(SHIPPED_WORLDS)}) or a colour-world model folder")
    parser.add_argument("--leaderboard", action="store_true", help="score every map method (DAAM layer groups and step bins, head max, text keys, refinement, ConceptAttention, label thresholds) on every world of --worlds")
    parser.add_argument("--worlds", type=_worlds, default=None, help="comma list of worlds for --leaderboard: shipped names or folders (default: every shipped world installed)")
    parser.add_argument("--plot", default=None, help="with --leaderboard: also draw the table as a PNG here")
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


def _worlds(value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items:
        raise argparse.ArgumentTypeError(f"give a comma list of worlds, got {value!r}")
    return items


def load_world(model: str, device: str) -> Any:
    """A world's pipeline (``UsageError`` for a model whose truth is not known)."""
    source = resolve_model_source(model)
    if not family_of(source).pixel_space:
        raise UsageError(f"evaluate --model {model}: only the colour worlds ({', '.join(SHIPPED_WORLDS)}) have a known truth")
    return load_pipeline(ModelSpec(model, device=device))


def installed_worlds() -> tuple[str, ...]:
    """The shipped worlds whose weights are installed."""
    from transforms.colour_world.assets import shipped_model_path

    found = []
    for world in SHIPPED_WORLDS:
        try:
            shipped_model_path(world)
        except (OSError, ValueError):
            continue
        found.append(world)
    return tuple(found)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Evaluate and print the table (and write JSON with ``--json``)."""
    if args.leaderboard:
        return main_leaderboard(args)
    if args.worlds or args.plot:
        raise UsageError("--worlds and --plot go with --leaderboard")
    from transforms.colour_world.evaluate import evaluate, untrained_baseline

    pipe = load_world(args.model, args.device)
    baseline = None if args.no_baseline else untrained_baseline(pipe)
    result = evaluate(pipe, per_prompt=args.n, seed=args.seed, baseline=baseline)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(table(result))
    return 0


def main_leaderboard(args: argparse.Namespace) -> int:
    """``evaluate --leaderboard``: every method of every world; markdown table, JSON, PNG."""
    from transforms.colour_world.leaderboard import leaderboard

    from ..leaderboard_report import markdown, plot

    worlds = args.worlds or installed_worlds()
    if not worlds:
        raise UsageError("no shipped world is installed: pass --worlds with colour-world folders")
    pipes = {world: load_world(world, args.device) for world in worlds}
    result = leaderboard(pipes, per_prompt=args.n, seed=args.seed)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.plot:
        plot(result, Path(args.plot))
    print(markdown(result))
    return 0

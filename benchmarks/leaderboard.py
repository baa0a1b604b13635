"""The full leaderboard: every map method on every shipped world, 288 held-out images each.

    python -m benchmarks.leaderboard [--worlds colour-world,colour-world-sa,colour-world-dit] [--n 24]

Scores each world with ``transforms.colour_world.leaderboard`` (``--n`` images of each of the 12
held-out prompts, one torch thread) and merges it into ``benchmarks/results/leaderboard.json``
(worlds scored earlier keep their entry, so worlds can be scored in separate runs), recomputes
the defaults over all worlds, draws ``docs/leaderboard.png`` and prints the markdown table that
the README quotes.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import REPOSITORY, RESULTS, machine_info, write_result
from pipeline.leaderboard_report import markdown, plot
from transforms.colour_world.assets import SHIPPED_WORLDS, shipped_model_path
from transforms.colour_world.leaderboard import choose_defaults, leaderboard
from transforms.colour_world.pipeline import load_world

NAME = "leaderboard"
PLOT = REPOSITORY / "docs" / "leaderboard.png"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default=",".join(SHIPPED_WORLDS), help="comma list of shipped worlds")
    parser.add_argument("--n", type=int, default=24, help="images per held-out prompt")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    worlds = [w.strip() for w in args.worlds.split(",") if w.strip()]
    pipes = {w: load_world(shipped_model_path(w)) for w in worlds}
    scored = leaderboard(pipes, per_prompt=args.n, seed=args.seed)
    path = RESULTS / f"{NAME}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if result.get("per_prompt", args.n) != args.n or result.get("seed", args.seed) != args.seed:
        result = {}  # another sample size or seed: start over
    merged = {**result.get("worlds", {}), **scored["worlds"]}
    result.update({k: v for k, v in scored.items() if k != "worlds"}, benchmark=NAME, worlds=merged,
                  defaults=choose_defaults(merged), machine=machine_info())
    write_result(NAME, result)
    plot(result, PLOT)
    print(markdown(result))
    print(f"results: {path}; plot: {PLOT}")
    return result


if __name__ == "__main__":
    main()

"""The ``evaluate --leaderboard`` result as a markdown table (README) and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ALL = "all"


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """One table per world: each method's colour-word mIoU, pseudo-mask mIoU at the default label
    threshold and at the best threshold of the scan; then the chosen defaults."""
    lines = []
    for name, world in result["worlds"].items():
        correct = world.get("colour_correct")
        lines += [
            f"**{name}** ({world['family']}; {world['images']} images, "
            f"{'—' if correct is None else f'{100 * correct:.1f} %'} colour-correct)",
            "",
            "| method | layers | steps | colour-word mIoU | pseudo-mask mIoU (τ 0.6) | best (τ) |",
            "|---|---|---|---|---|---|",
        ]
        for row in world["rows"]:
            best = row.get("pseudo_mask_miou_best")
            shown = "—" if best is None else f"{best:.3f} ({row['best_threshold']})"
            lines.append(f"| {row['method']} | {row['layers']} | {row['steps']} | {_number(row['colour_miou'])} | "
                         f"{_number(row.get('pseudo_mask_miou'))} | {shown} |")
        lines.append("")
    if result.get("defaults"):
        lines += ["| world | best label recipe | pseudo-mask mIoU | plain DAAM at τ 0.6 |", "|---|---|---|---|"]
        for name, choice in result["defaults"].items():
            lines.append(f"| {name} | {choice['method']}, label threshold {choice['label_threshold']} | "
                         f"{_number(choice['pseudo_mask_miou'])} | {_number(choice['daam_pseudo_mask_miou_at_default'])} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """A PNG: per world, DAAM's mIoU per layer group and per step bin (colour-word and
    pseudo-mask), and every method's best pseudo-mask mIoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = result["worlds"]
    fig, axes = plt.subplots(len(worlds), 2, figsize=(13, 3.6 * len(worlds)), squeeze=False)
    for (name, world), (left, right) in zip(worlds.items(), axes):
        daam = [r for r in world["rows"] if r["method"] == "DAAM"]
        labels = [("all" if r["layers"] == ALL and r["steps"] == ALL else
                   f"layers {r['layers']}" if r["steps"] == ALL else f"steps {r['steps']}") for r in daam]
        x = range(len(daam))
        for offset, key, title in ((-0.2, "colour_miou", "colour-word mIoU"), (0.2, "pseudo_mask_miou", "pseudo-mask mIoU (τ 0.6)")):
            left.bar([i + offset for i in x], [r[key] or 0 for r in daam], width=0.4, label=title)
        left.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
        left.set_ylim(0, 1)
        left.set_title(f"{name}: DAAM per layer group / step bin", fontsize=10)
        left.legend(fontsize=8)
        methods = [r for r in world["rows"] if r["layers"] == ALL and r["steps"] == ALL and r.get("pseudo_mask_miou_best") is not None]
        right.barh(range(len(methods)), [r["pseudo_mask_miou_best"] for r in methods], color="tab:green")
        right.set_yticks(range(len(methods)), [f"{r['method']} (τ {r['best_threshold']})" for r in methods], fontsize=7)
        right.invert_yaxis()
        right.set_xlim(0, 1)
        right.set_title(f"{name}: pseudo-mask mIoU per method (best label threshold)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Compare two outputs of the same command (e.g. before and after a refactor).

Usage: python scripts/compare_outputs.py OUT_A OUT_B

Data shards, WebDataset tars, manifests, failure records and run.json must be byte-identical;
stats markers may differ only in their ``seconds``; the card's front matter must be equal as YAML
(key order may differ) and its Markdown body byte-identical. Exit 0 when the outputs agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

IGNORED = {".lock"}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name not in IGNORED}


def _card_parts(path: Path) -> tuple[object, str]:
    _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(front), body


def differences(a: Path, b: Path) -> list[str]:
    """What differs between the outputs ``a`` and ``b`` beyond timings and YAML key order."""
    found = [f"only in {a}: {p}" for p in sorted(_files(a) - _files(b))]
    found += [f"only in {b}: {p}" for p in sorted(_files(b) - _files(a))]
    for rel in sorted(_files(a) & _files(b)):
        left, right = a / rel, b / rel
        if rel == "README.md":
            same = _card_parts(left) == _card_parts(right)
        elif rel.startswith("_stats/"):
            same = {**json.loads(left.read_text()), "seconds": 0} == {**json.loads(right.read_text()), "seconds": 0}
        else:
            same = left.read_bytes() == right.read_bytes()
        if not same:
            found.append(f"differs: {rel}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    found = differences(Path(argv[0]), Path(argv[1]))
    for line in found:
        print(line)
    print("outputs agree" if not found else f"{len(found)} differences")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Row-id checks across files: every prompt of a shard's manifest done exactly once, and ids unique
per format folder (uncommitted Parquet files included: they are what duplicates rows when loaded)."""

from __future__ import annotations

import io
import json
from collections import Counter

from schemas.output_records import ShardStats
from transforms.shards.layout import DATA_DIR, STATS_DIR

from .context import Validation, shard_of


def check_prompts(v: Validation, shard: str, stats: ShardStats) -> None:
    """Every prompt of the shard's manifest is in exactly one row (first image) or failure."""
    full = v.layout.manifest_file(shard)
    if not v.layout.exists(full):
        return
    try:
        lines = v.read_bytes(v.rel(full)).decode("utf-8").splitlines()
        wanted = [json.loads(line)["id"] for line in lines if line.strip()]
    except (OSError, ValueError, KeyError):
        return
    done = [i for i in stats.ids if "#" not in i] + list(stats.failed_ids)
    counts = Counter(done)
    missing = [i for i in wanted if counts[i] == 0]
    twice = [i for i, n in counts.items() if n > 1]
    marker = f"{STATS_DIR}/{shard}.json"
    if missing:
        v.add(shard, "ids", f"{len(missing)} prompts of the shard have neither a row nor a failure record "
              f"(e.g. {missing[0]})", marker)
    if twice:
        v.add(shard, "duplicate_id", f"prompt {twice[0]} appears more than once", marker)


def note_stray_parquet_ids(v: Validation) -> None:
    """Note the ids of uncommitted Parquet files (``v.ids``; unreadable ones are skipped)."""
    import pyarrow.parquet as pq

    committed = v.committed_files()
    for full in v.layout.list(DATA_DIR):
        rel = v.rel(full)
        if rel in committed or not rel.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(io.BytesIO(v.read_bytes(rel)), columns=["id"])
        except Exception:  # a damaged stray file is reported as a stray file only
            continue
        v.note_ids(rel, table.column("id").to_pylist())


def check_unique_ids(v: Validation) -> None:
    """Ids must be unique per format folder (``data/`` and ``wds/`` each hold every row once).

    A duplicate between a committed file and a stray one is blamed on the stray file only."""
    committed = v.committed_files()
    clashes: dict[str, Counter[str]] = {}
    for places in v.ids.repeated():
        by_folder: dict[str, list[str]] = {}
        for rel in places:
            by_folder.setdefault(rel.split("/", 1)[0], []).append(rel)
        for rels in by_folder.values():
            if len(rels) < 2:
                continue
            strays = [r for r in rels if r not in committed]
            for rel in (strays or rels):
                others = sorted(set(rels) - {rel}) or ["the same file"]
                clashes.setdefault(rel, Counter())[", ".join(others)] += 1
    for rel in sorted(clashes):
        shard = shard_of(rel) if rel in committed else ""
        for others, n in sorted(clashes[rel].items()):
            v.add(shard, "duplicate_id", f"{n} row ids also occur in {others}", rel)

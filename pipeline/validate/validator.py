"""``validate_output(path) -> [Problem]``: every check, in order, on one output folder."""

from __future__ import annotations

import random

from transforms.shards.layout import OutputLayout

from .context import Validation
from .dataset_checks import check_card, check_strays, load_run, load_stats
from .id_checks import check_prompts, check_unique_ids, note_stray_parquet_ids
from .problems import Problem
from .segmentation_checks import check_id2label, check_segmentation_file
from transforms.shards.layout import SEGMENTATION_FORMAT
from .shard_checks import check_shard


def validate_output(path: str, sample: int | None = None, seed: int = 0) -> list[Problem]:
    """Every problem of the output folder at ``path`` (local or fsspec URL); ``[]`` when sound.

    Memory stays bounded at any size: markers are kept without their id lists (each is read
    again for its own shard's checks) and row ids go to disk buckets (``IdLedger``). ``sample``:
    decode and check the rows (maps, images, checksums) of that many shards only, chosen with
    ``seed``; every shard still gets its marker, file, row-count, id and uniqueness checks."""
    v = Validation(OutputLayout(path))
    try:
        if not load_run(v):
            return v.problems
        load_stats(v)
        if sample is not None:
            v.sample = set(random.Random(seed).sample(sorted(v.stats), min(sample, len(v.stats))))
        check_strays(v)
        for shard in v.expected:
            if shard in v.stats:
                _check_committed(v, shard)
        note_stray_parquet_ids(v)
        check_unique_ids(v)
        check_card(v)
        check_id2label(v)
        return v.problems
    finally:
        v.ids.close()


def _check_committed(v: Validation, shard: str) -> None:
    """One committed shard's files, rows and prompts, with its full marker (read again)."""
    try:
        stats = v.marker(shard)
    except (OSError, ValueError):  # read fine a moment ago: changed under us; load_stats reported what it could
        return
    left = check_shard(v, shard, stats)
    if SEGMENTATION_FORMAT in left:
        check_segmentation_file(v, shard, left[SEGMENTATION_FORMAT], stats)
    check_prompts(v, shard, stats)

"""``validate_output(path) -> [Problem]``: every check, in order, on one output folder."""

from __future__ import annotations

from transforms.shards.layout import OutputLayout

from .context import Validation
from .dataset_checks import check_card, check_strays, load_run, load_stats
from .id_checks import check_prompts, check_unique_ids, note_stray_parquet_ids
from .problems import Problem
from .segmentation_checks import check_id2label, check_segmentation_file
from transforms.shards.layout import SEGMENTATION_FORMAT
from .shard_checks import check_shard


def validate_output(path: str) -> list[Problem]:
    """Every problem of the output folder at ``path`` (local or fsspec URL); ``[]`` when sound."""
    v = Validation(OutputLayout(path))
    if not load_run(v):
        return v.problems
    load_stats(v)
    check_strays(v)
    for shard in v.expected:
        stats = v.stats.get(shard)
        if stats is not None:
            left = check_shard(v, shard, stats)
            if SEGMENTATION_FORMAT in left:
                check_segmentation_file(v, shard, left[SEGMENTATION_FORMAT], stats)
            check_prompts(v, shard, stats)
    note_stray_parquet_ids(v)
    check_unique_ids(v)
    check_card(v)
    check_id2label(v)
    return v.problems

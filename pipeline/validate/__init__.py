"""Check a finished output folder against its own records, and repair what is damaged.

``validate_output(path) -> [Problem]`` checks every committed shard against its stats marker
(``_stats/*.json``: rows, ids, files with size and sha256) and against the features recorded in
``run.json``: row counts, ids unique across shards, one token-map row per token, map shape/dtype,
finite non-negative maps, images that decode at the recorded size, the dataset card's
``dataset_info.features`` equal to the Arrow features, no missing shard and no stray file that
``load_dataset`` would read. ``damaged_shards`` names the shards a list of problems makes unusable;
``repair_output`` deletes them and stray files and regenerates those shards.
"""

from .problems import Problem, damaged_shards
from .repair import repair_output
from .validator import validate_output

__all__ = ["Problem", "validate_output", "damaged_shards", "repair_output"]

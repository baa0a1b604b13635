"""Dataset-wide checks: ``run.json``, the stats markers present (missing shards), stray files that
``load_dataset`` or the Hub would trip on, and the dataset card's features and splits."""

from __future__ import annotations

import posixpath
import re

from schemas.output_records import RunInfo, ShardStats, shard_name
from transforms.shards.layout import (
    CARD_FILE,
    DATA_DIR,
    ID2LABEL_FILE,
    SEGMENTATION_DIR,
    SEGMENTATION_FORMAT,
    FAILURES_DIR,
    LOCK_FILE,
    MANIFEST_DIR,
    RUN_FILE,
    STATS_DIR,
    TMP_DIR,
    WDS_DIR,
)

from .context import Validation, feature_diff, shard_of

READ_FAILURES = "read.jsonl"
STRAY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
CARD_YAML = re.compile(r"^---\r?\n(.*?)\r?\n---\r?\n", re.S)


def load_run(v: Validation) -> bool:
    """Read ``run.json`` into ``v`` (geometry, formats, features, planned shards); whether it is usable."""
    from schemas.maps import stored_map_size
    from schemas.record import run_features

    layout = v.layout
    if not layout.fs.exists(layout.base) or not layout.fs.isdir(layout.base):
        v.add("", "run_json", f"{layout.root} is not a folder")
        return False
    if not layout.exists(layout.path(RUN_FILE)):
        v.add("", "run_json", f"no {RUN_FILE}: not a daam-datasets output (or the run never started)", RUN_FILE)
        return False
    try:
        run = RunInfo.from_dict(layout.read_json(layout.path(RUN_FILE)))
        v.image_size = tuple(int(x) for x in run.image_size)
        v.map_size = stored_map_size(run.map_size, run.settings.get("map_size"))
        v.map_dtype = run.settings.get("map_dtype", "float16")
        v.overlay = bool(run.settings.get("overlay", False))
        v.formats = tuple(run.settings.get("formats", ("parquet",)))
        segmentation = run.settings.get("segmentation")
        if segmentation:
            v.formats += (SEGMENTATION_FORMAT,)
            v.num_classes = len(segmentation["classes"])
        count = int(run.shards)
        v.timestep_bins = run.settings.get("generation", {}).get("trace", {}).get("per_timestep")
        v.concepts = run.settings.get("generation", {}).get("concepts") is not None
        v.run_grid = tuple(int(x) for x in run.map_size)
        v.features = run_features(run.settings, run.map_size)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:  # RecordError is a ValueError
        v.add("", "run_json", f"unreadable or incomplete {RUN_FILE} ({type(error).__name__}: {error})", RUN_FILE)
        return False
    v.run = run
    v.expected = [shard_name(i, count) for i in range(count)]
    if not run.complete:
        v.add("", "incomplete", f"run status is {run.status!r}: the run did not finish; rerun it", RUN_FILE)
    return True


def load_stats(v: Validation) -> None:
    """Read every stats marker into ``v.stats``; report unreadable, foreign and missing ones."""
    fingerprint = v.run.fingerprint if v.run else None
    for full in v.layout.list(STATS_DIR):
        rel = v.rel(full)
        name = posixpath.basename(full)
        if not name.endswith(".json"):
            v.add("", "stray_file", "not a stats marker", rel)
            continue
        shard = name[: -len(".json")]
        if shard not in v.expected:
            v.add(shard, "stray_file",
                  f"stats marker of a shard that is not in this run's plan ({len(v.expected)} shards)", rel)
            continue
        try:
            stats = ShardStats.from_dict(v.layout.read_json(full))
        except (OSError, ValueError) as error:  # RecordError is a ValueError
            v.add(shard, "stats", f"unreadable stats marker ({type(error).__name__}: {error})", rel)
            continue
        if stats.fingerprint not in (None, fingerprint):
            v.add(shard, "stats", f"written by another run (fingerprint {stats.fingerprint} vs {fingerprint})", rel)
        if len(stats.ids) != stats.rows:
            v.add(shard, "stats", f"{len(stats.ids)} ids for {stats.rows} rows", rel)
        v.stats[shard] = stats.summary()
    for shard in v.expected:
        if shard not in v.stats and not v.has("stats", shard):
            v.add(shard, "missing_shard", "no stats marker: the shard was never committed (crashed or deleted)",
                  f"{STATS_DIR}/{shard}.json")


def expected_files(v: Validation) -> set[str]:
    """Root-relative paths of every file an output of this plan may hold."""
    files = {RUN_FILE, CARD_FILE, LOCK_FILE, ID2LABEL_FILE, f"{FAILURES_DIR}/{READ_FAILURES}"}
    for shard in v.expected:
        files.add(f"{STATS_DIR}/{shard}.json")
        files.add(f"{FAILURES_DIR}/{shard}.jsonl")
        files.add(f"{MANIFEST_DIR}/{shard}.jsonl")
    return files | v.committed_files()


def check_strays(v: Validation) -> None:
    """Report files that belong to no committed shard (load_dataset would read some of them)."""
    expected = expected_files(v)
    for full in v.layout.fs.find(v.layout.base, withdirs=False):
        rel = v.rel(full)
        top = rel.split("/", 1)[0]
        if top.startswith(".git") or rel in expected:
            continue
        if top == TMP_DIR:
            v.add("", "stray_file", "leftover temporary file of a crashed writer", rel)
        elif top in (DATA_DIR, WDS_DIR, SEGMENTATION_DIR):
            shard = shard_of(rel)
            why = "data file without a stats marker (uncommitted shard; load_dataset would read it)"
            if shard not in v.expected:
                why = "data file that belongs to no shard of this run (load_dataset would read it)"
                shard = ""
            v.add(shard, "stray_file", why, rel)
        elif top == STATS_DIR:
            continue  # reported by load_stats
        elif top in (FAILURES_DIR, MANIFEST_DIR):
            v.add("", "stray_file", "unexpected file", rel)
        elif rel.endswith(STRAY_SUFFIXES):
            v.add("", "stray_file", "leftover temporary file", rel)
        elif "/" not in rel and rel.endswith(".py"):
            v.add("", "stray_file", "a .py file in the repository root makes the Hub refuse the dataset", rel)


def check_card(v: Validation) -> None:
    """The card's ``dataset_info``: features equal to the Arrow features, train split row count."""
    import yaml
    from datasets import Features

    if "parquet" not in v.formats:
        return
    if not v.layout.exists(v.layout.path(CARD_FILE)):
        v.add("", "card", "no dataset card (README.md)", CARD_FILE)
        return
    text = v.read_bytes(CARD_FILE).decode("utf-8", "replace")
    if "RUN-NOT-FINISHED" in text:
        v.add("", "card", "placeholder card of an unfinished run (load_dataset refuses it); rerun to finish", CARD_FILE)
        return
    match = CARD_YAML.match(text)
    if not match:
        v.add("", "card", "README.md does not start with a --- YAML block", CARD_FILE)
        return
    try:
        meta = yaml.safe_load(match.group(1)) or {}
        info = meta["dataset_info"]
        if isinstance(info, list):
            info = next(i for i in info if i.get("config_name", "default") == "default")
        card_features = Features._from_yaml_list(info["features"])
    except Exception as error:  # any malformed YAML or features block
        v.add("", "card", f"card has no usable dataset_info.features ({type(error).__name__}: {error})", CARD_FILE)
        return
    if card_features != v.features:
        v.add("", "card", f"card features differ from the Arrow features: {feature_diff(card_features, v.features)}",
              CARD_FILE)
    rows = sum(s.rows for s in v.stats.values())
    for split in info.get("splits") or []:
        if split.get("name") == "train" and split.get("num_examples") != rows and not v.has("missing_shard"):
            v.add("", "card", f"card says {split.get('num_examples')} examples, the shards hold {rows}", CARD_FILE)

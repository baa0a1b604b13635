"""Check a finished output folder against its own records: ``validate_output(path) -> [Problem]``.

Every committed shard is checked against its stats marker (``_stats/*.json``: rows, ids, files
with size and sha256) and against the features recorded in ``run.json``: row counts, ids unique
across shards, one token-map row per token, map shape/dtype, finite non-negative maps, images
that decode at the recorded size, the dataset card's ``dataset_info.features`` equal to the Arrow
features, no missing shard and no stray file that ``load_dataset`` would read.

``repair_output`` deletes what is damaged (a shard's files, marker and failure records; stray
files) and regenerates just those shards with the settings recorded in ``run.json``.

Problem kinds (stable strings, for callers that filter): ``run_json``, ``card``, ``missing_shard``,
``incomplete``, ``stats``, ``missing_file``, ``size``, ``checksum``, ``unreadable``, ``schema``,
``row_count``, ``ids``, ``duplicate_id``, ``tokens``, ``map_shape``, ``map_dtype``,
``map_values``, ``image``, ``failures``, ``stray_file``.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np

from transforms.layout import (
    CARD_FILE,
    DATA_DIR,
    FAILURES_DIR,
    FORMAT_DIRS,
    LOCK_FILE,
    MANIFEST_DIR,
    RUN_FILE,
    STATS_DIR,
    TMP_DIR,
    WDS_DIR,
    OutputLayout,
)

logger = logging.getLogger(__name__)

READ_FAILURES = "read.jsonl"
SHARD_NAME = re.compile(r"^train-(\d{5})-of-(\d{5})$")
STRAY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
# kinds that make a shard's files unusable: ``--repair`` deletes and regenerates the shard
SHARD_DAMAGE = frozenset(
    {"missing_shard", "stats", "missing_file", "size", "checksum", "unreadable", "schema", "row_count", "ids",
     "duplicate_id", "tokens", "map_shape", "map_dtype", "map_values", "image", "failures"}
)
BATCH_ROWS = 32


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an output: the shard (``""`` if dataset-wide), its kind, a message and
    the file concerned (relative to the output root, ``""`` if none)."""

    shard: str
    kind: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = self.file or self.shard or "dataset"
        return f"{where}: [{self.kind}] {self.message}"


class _Checker:
    """State of one validation: the layout, run info, features and problems found so far."""

    def __init__(self, path: str) -> None:
        self.layout = OutputLayout(path)
        self.problems: list[Problem] = []
        self.run: dict[str, Any] = {}
        self.features: Any = None
        self.image_size: tuple[int, int] | None = None
        self.map_size: tuple[int, int] | None = None
        self.map_dtype = "float16"
        self.formats: tuple[str, ...] = ("parquet",)
        self.expected: list[str] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.id_places: dict[str, list[str]] = {}

    # -- helpers -------------------------------------------------------------------------------
    def add(self, shard: str, kind: str, message: str, file: str = "") -> None:
        self.problems.append(Problem(shard, kind, message, file))

    def rel(self, full: str) -> str:
        base = self.layout.base.rstrip("/")
        return full[len(base) + 1 :] if full.startswith(base + "/") else full

    def read_bytes(self, rel_path: str) -> bytes:
        with self.layout.fs.open(self.layout.path(rel_path), "rb") as fh:
            return fh.read()

    # -- run.json ------------------------------------------------------------------------------
    def load_run(self) -> bool:
        from schemas.record import build_features

        layout = self.layout
        if not layout.fs.exists(layout.base) or not layout.fs.isdir(layout.base):
            self.add("", "run_json", f"{layout.root} is not a folder")
            return False
        if not layout.exists(layout.path(RUN_FILE)):
            self.add("", "run_json", f"no {RUN_FILE}: not a daam-datasets output (or the run never started)", RUN_FILE)
            return False
        try:
            self.run = layout.read_json(layout.path(RUN_FILE))
            settings = self.run["settings"]
            self.image_size = tuple(int(v) for v in self.run["image_size"])  # type: ignore[assignment]
            self.map_size = tuple(int(v) for v in self.run["map_size"])  # type: ignore[assignment]
            self.map_dtype = settings.get("map_dtype", "float16")
            self.formats = tuple(settings.get("formats", ("parquet",)))
            count = int(self.run["shards"])
            self.features = build_features(self.map_size[0], self.map_size[1], self.map_dtype)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            self.add("", "run_json", f"unreadable or incomplete {RUN_FILE} ({type(error).__name__}: {error})", RUN_FILE)
            return False
        self.expected = [f"train-{i:05d}-of-{count:05d}" for i in range(count)]
        if self.run.get("status") != "complete":
            self.add("", "incomplete", f"run status is {self.run.get('status')!r}: the run did not finish; rerun it", RUN_FILE)
        return True

    # -- stats markers -------------------------------------------------------------------------
    def load_stats(self) -> None:
        for full in self.layout.list(STATS_DIR):
            rel = self.rel(full)
            name = posixpath.basename(full)
            if not name.endswith(".json"):
                self.add("", "stray_file", "not a stats marker", rel)
                continue
            shard = name[: -len(".json")]
            if shard not in self.expected:
                self.add(shard, "stray_file", f"stats marker of a shard that is not in this run's plan ({len(self.expected)} shards)", rel)
                continue
            try:
                stats = self.layout.read_json(full)
                if not isinstance(stats, dict):
                    raise ValueError("not a JSON object")
                for key in ("rows", "ids", "files", "failed"):
                    if key not in stats:
                        raise KeyError(key)
            except (OSError, ValueError, KeyError) as error:
                self.add(shard, "stats", f"unreadable stats marker ({type(error).__name__}: {error})", rel)
                continue
            if stats.get("fingerprint") not in (None, self.run.get("fingerprint")):
                self.add(shard, "stats", f"written by another run (fingerprint {stats.get('fingerprint')} vs {self.run.get('fingerprint')})", rel)
            if len(stats["ids"]) != stats["rows"]:
                self.add(shard, "stats", f"{len(stats['ids'])} ids for {stats['rows']} rows", rel)
            self.stats[shard] = stats
        for shard in self.expected:
            if shard not in self.stats and not any(p.shard == shard and p.kind == "stats" for p in self.problems):
                self.add(shard, "missing_shard", "no stats marker: the shard was never committed (crashed or deleted)",
                         f"{STATS_DIR}/{shard}.json")

    # -- stray files ---------------------------------------------------------------------------
    def expected_files(self) -> set[str]:
        files = {RUN_FILE, CARD_FILE, LOCK_FILE, f"{FAILURES_DIR}/{READ_FAILURES}"}
        for shard in self.expected:
            files.add(f"{STATS_DIR}/{shard}.json")
            files.add(f"{FAILURES_DIR}/{shard}.jsonl")
            files.add(f"{MANIFEST_DIR}/{shard}.jsonl")
        for shard, stats in self.stats.items():
            for info in stats["files"].values():
                files.add(info.get("path", ""))
        return files

    def check_strays(self) -> None:
        expected = self.expected_files()
        for full in self._walk():
            rel = self.rel(full)
            top = rel.split("/", 1)[0]
            if top.startswith(".git") or rel in expected:
                continue
            if top == TMP_DIR:
                self.add("", "stray_file", "leftover temporary file of a crashed writer", rel)
            elif top in (DATA_DIR, WDS_DIR):
                shard = self._shard_of(rel)
                why = "data file without a stats marker (uncommitted shard; load_dataset would read it)"
                if shard not in self.expected:
                    why = "data file that belongs to no shard of this run (load_dataset would read it)"
                    shard = ""
                self.add(shard, "stray_file", why, rel)
            elif top in (STATS_DIR,):
                continue  # reported by load_stats
            elif top in (FAILURES_DIR, MANIFEST_DIR):
                self.add("", "stray_file", "unexpected file", rel)
            elif rel.endswith(STRAY_SUFFIXES):
                self.add("", "stray_file", "leftover temporary file", rel)
            elif "/" not in rel and rel.endswith(".py"):
                self.add("", "stray_file", "a .py file in the repository root makes the Hub refuse the dataset", rel)

    def _walk(self) -> Iterator[str]:
        fs, base = self.layout.fs, self.layout.base
        for full in fs.find(base, withdirs=False):
            yield full

    @staticmethod
    def _shard_of(rel: str) -> str:
        stem = posixpath.basename(rel).split(".", 1)[0]
        return stem if SHARD_NAME.match(stem) else ""

    # -- data files ----------------------------------------------------------------------------
    def check_shard(self, shard: str, stats: dict[str, Any]) -> None:
        for fmt in self.formats:
            if fmt not in FORMAT_DIRS:
                continue
            folder, ext = FORMAT_DIRS[fmt]
            rel = f"{folder}/{shard}.{ext}"
            info = stats["files"].get(fmt)
            if stats["rows"] == 0:
                if info or self.layout.exists(self.layout.path(rel)):
                    self.add(shard, "stats", f"a shard with 0 rows must have no {fmt} file", rel)
                continue
            if not info:
                self.add(shard, "stats", f"stats list no {fmt} file for {stats['rows']} rows", f"{STATS_DIR}/{shard}.json")
                continue
            rel = info.get("path", rel)
            full = self.layout.path(rel)
            if not self.layout.exists(full):
                self.add(shard, "missing_file", "data file listed in the stats marker is missing", rel)
                continue
            size = self.layout.fs.size(full)
            if info.get("bytes") is not None and size != info["bytes"]:
                self.add(shard, "size", f"{size} bytes, stats say {info['bytes']} (truncated or rewritten)", rel)
            if info.get("sha256") and self.layout.sha256(full) != info["sha256"]:
                self.add(shard, "checksum", "sha256 differs from the stats marker", rel)
            if fmt == "parquet":
                self.check_parquet(shard, rel, stats)
            else:
                self.check_webdataset(shard, rel, stats)
        self.check_failures(shard, stats)

    def check_rows(self, shard: str, rel: str, stats: dict[str, Any], ids: list[str], count: int) -> None:
        if count != stats["rows"]:
            self.add(shard, "row_count", f"{count} rows, stats say {stats['rows']}", rel)
        if ids != list(stats["ids"]):
            self.add(shard, "ids", "row ids differ from the ids in the stats marker", rel)
        for row_id in ids:
            self.id_places.setdefault(row_id, []).append(rel)

    def check_row(self, shard: str, rel: str, row: int, tokens: list, maps: np.ndarray | None, png: bytes | None,
                  words: list | None = None, maps_error: str = "") -> None:
        where = f"row {row}"
        if maps_error:
            self.add(shard, "map_shape", f"{where}: {maps_error}", rel)
        elif maps is not None:
            h, w = self.map_size  # type: ignore[misc]
            if maps.dtype != np.dtype(self.map_dtype):
                self.add(shard, "map_dtype", f"{where}: maps are {maps.dtype}, features say {self.map_dtype}", rel)
            if maps.ndim != 3 or maps.shape[1:] != (h, w):
                self.add(shard, "map_shape", f"{where}: maps of shape {maps.shape}, expected (n, {h}, {w})", rel)
            elif maps.shape[0] != len(tokens):
                self.add(shard, "tokens", f"{where}: {maps.shape[0]} map rows for {len(tokens)} tokens", rel)
            values = maps.astype(np.float32)
            if not np.isfinite(values).all():
                self.add(shard, "map_values", f"{where}: maps contain NaN or infinite values", rel)
            elif (values < 0).any():
                self.add(shard, "map_values", f"{where}: maps contain negative values", rel)
        if words:
            for word in words:
                if not 0 <= word["start"] < word["end"] <= len(tokens):
                    self.add(shard, "tokens", f"{where}: word {word['word']!r} spans [{word['start']}, {word['end']}) "
                             f"outside {len(tokens)} tokens", rel)
                    break
        if png is None:
            self.add(shard, "image", f"{where}: no image bytes", rel)
            return
        from PIL import Image as PILImage

        try:
            with PILImage.open(io.BytesIO(png)) as image:
                image.load()
                size = image.size
        except Exception as error:  # PIL raises many types for damaged images
            self.add(shard, "image", f"{where}: image does not decode ({type(error).__name__}: {error})", rel)
            return
        if self.image_size and size != (self.image_size[1], self.image_size[0]):
            self.add(shard, "image", f"{where}: image is {size[0]}x{size[1]}, run.json says "
                     f"{self.image_size[1]}x{self.image_size[0]}", rel)

    def check_parquet(self, shard: str, rel: str, stats: dict[str, Any]) -> None:
        import pyarrow.parquet as pq
        from datasets import Features

        try:
            with self.layout.fs.open(self.layout.path(rel), "rb") as fh:
                parquet = pq.ParquetFile(io.BytesIO(fh.read()))
            schema = parquet.schema_arrow
        except Exception as error:  # pyarrow raises several types for damaged files
            self.add(shard, "unreadable", f"not a readable Parquet file ({type(error).__name__}: {error})", rel)
            return
        try:
            found = Features.from_arrow_schema(schema)
        except Exception as error:
            self.add(shard, "schema", f"Arrow schema has no usable features metadata ({error})", rel)
            return
        if found != self.features:
            self.add(shard, "schema", f"features differ from run.json's: {_feature_diff(found, self.features)}", rel)
            return
        if schema.remove_metadata() != self.features.arrow_schema.remove_metadata():
            self.add(shard, "schema", "Arrow schema differs from the features' schema", rel)
            return
        ids: list[str] = []
        count = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                batch_ids = batch.column("id").to_pylist()
                tokens = batch.column("tokens").to_pylist()
                words = batch.column("words").to_pylist()
                images = batch.column("image").to_pylist()
                maps_list = _maps_of(batch.column("token_maps"), self.map_size, self.map_dtype)
                for i, row_id in enumerate(batch_ids):
                    maps, error = maps_list[i]
                    image = images[i] or {}
                    self.check_row(shard, rel, count + i, tokens[i] or [], maps, image.get("bytes"), words[i], error)
                    if row_id is None:
                        self.add(shard, "ids", f"row {count + i}: null id", rel)
                ids.extend(x for x in batch_ids if x is not None)
                count += batch.num_rows
        except Exception as error:  # a damaged page shows only when it is read
            self.add(shard, "unreadable", f"cannot read rows ({type(error).__name__}: {error})", rel)
            return
        if parquet.metadata.num_rows != count:
            self.add(shard, "row_count", f"footer says {parquet.metadata.num_rows} rows, read {count}", rel)
        self.check_rows(shard, rel, stats, ids, count)

    def check_webdataset(self, shard: str, rel: str, stats: dict[str, Any]) -> None:
        from schemas.record import WDS_EXTENSIONS, WDS_IMAGE, WDS_MAPS, WDS_META

        samples: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        try:
            with tarfile.open(fileobj=io.BytesIO(self.read_bytes(rel)), mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = posixpath.basename(member.name).partition(".")
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    samples[key][ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as error:
            self.add(shard, "unreadable", f"not a readable tar file ({type(error).__name__}: {error})", rel)
            return
        ids: list[str] = []
        for row, key in enumerate(order):
            sample = samples[key]
            missing = [e for e in WDS_EXTENSIONS if e not in sample]
            if missing:
                self.add(shard, "unreadable", f"sample {key} lacks {', '.join(missing)}", rel)
                continue
            try:
                meta = json.loads(sample[WDS_META].decode("utf-8"))
                ids.append(meta["id"])
                tokens = meta.get("tokens") or []
                words = meta.get("words")
            except (ValueError, KeyError) as error:
                self.add(shard, "unreadable", f"sample {key}: bad JSON ({error})", rel)
                continue
            maps, error_text = None, ""
            try:
                maps = np.load(io.BytesIO(sample[WDS_MAPS]), allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:
                error_text = f"maps.npy does not load ({error})"
            self.check_row(shard, rel, row, tokens, maps, sample[WDS_IMAGE], words, error_text)
        self.check_rows(shard, rel, stats, ids, len(order))

    def check_failures(self, shard: str, stats: dict[str, Any]) -> None:
        rel = f"{FAILURES_DIR}/{shard}.jsonl"
        failed = int(stats.get("failed", 0))
        if not self.layout.exists(self.layout.path(rel)):
            if failed:
                self.add(shard, "failures", f"stats count {failed} failed prompts but there are no failure records", rel)
            return
        try:
            records = [json.loads(line) for line in self.read_bytes(rel).decode("utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as error:
            self.add(shard, "failures", f"unreadable failure records ({error})", rel)
            return
        if len(records) != failed:
            self.add(shard, "failures", f"{len(records)} failure records, stats say {failed}", rel)

    def check_prompts(self, shard: str, stats: dict[str, Any]) -> None:
        """Every prompt of the shard's manifest is in exactly one row (first image) or failure."""
        rel = f"{MANIFEST_DIR}/{shard}.jsonl"
        if not self.layout.exists(self.layout.path(rel)):
            return
        try:
            wanted = [json.loads(l)["id"] for l in self.read_bytes(rel).decode("utf-8").splitlines() if l.strip()]
        except (OSError, ValueError, KeyError):
            return
        done = [i for i in stats["ids"] if "#" not in i] + list(stats.get("failed_ids", []))
        counts = Counter(done)
        missing = [i for i in wanted if counts[i] == 0]
        twice = [i for i, n in counts.items() if n > 1]
        if missing:
            self.add(shard, "ids", f"{len(missing)} prompts of the shard have neither a row nor a failure record "
                     f"(e.g. {missing[0]})", f"{STATS_DIR}/{shard}.json")
        if twice:
            self.add(shard, "duplicate_id", f"prompt {twice[0]} appears more than once", f"{STATS_DIR}/{shard}.json")

    def check_unique_ids(self) -> None:
        """Ids must be unique per format folder (``data/`` and ``wds/`` each hold every row once).

        A duplicate between a committed file and a stray one is blamed on the stray file only."""
        committed = {info.get("path") for s in self.stats.values() for info in s["files"].values()}
        clashes: dict[str, Counter[str]] = {}
        for row_id, places in self.id_places.items():
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
            shard = self._shard_of(rel) if rel in committed else ""
            for others, n in sorted(clashes[rel].items()):
                self.add(shard, "duplicate_id", f"{n} row ids also occur in {others}", rel)

    def check_stray_data(self) -> None:
        """Read the ids of uncommitted data files too: they are what makes duplicates when loaded."""
        import pyarrow.parquet as pq

        committed = {info.get("path") for s in self.stats.values() for info in s["files"].values()}
        for full in self.layout.list(DATA_DIR):
            rel = self.rel(full)
            if rel in committed or not rel.endswith(".parquet"):
                continue
            try:
                with self.layout.fs.open(full, "rb") as fh:
                    table = pq.read_table(io.BytesIO(fh.read()), columns=["id"])
            except Exception:
                continue
            for row_id in table.column("id").to_pylist():
                self.id_places.setdefault(row_id, []).append(rel)

    # -- card ----------------------------------------------------------------------------------
    def check_card(self) -> None:
        import yaml
        from datasets import Features

        if "parquet" not in self.formats:
            return
        path = self.layout.path(CARD_FILE)
        if not self.layout.exists(path):
            self.add("", "card", "no dataset card (README.md)", CARD_FILE)
            return
        text = self.read_bytes(CARD_FILE).decode("utf-8", "replace")
        if "RUN-NOT-FINISHED" in text:
            self.add("", "card", "placeholder card of an unfinished run (load_dataset refuses it); rerun to finish", CARD_FILE)
            return
        match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", text, re.S)
        if not match:
            self.add("", "card", "README.md does not start with a --- YAML block", CARD_FILE)
            return
        try:
            meta = yaml.safe_load(match.group(1)) or {}
            info = meta["dataset_info"]
            if isinstance(info, list):
                info = next(i for i in info if i.get("config_name", "default") == "default")
            card_features = Features._from_yaml_list(info["features"])
        except Exception as error:
            self.add("", "card", f"card has no usable dataset_info.features ({type(error).__name__}: {error})", CARD_FILE)
            return
        if card_features != self.features:
            self.add("", "card", f"card features differ from the Arrow features: {_feature_diff(card_features, self.features)}", CARD_FILE)
        rows = sum(s["rows"] for s in self.stats.values())
        for split in info.get("splits") or []:
            if split.get("name") == "train" and split.get("num_examples") != rows and not self._missing_shards():
                self.add("", "card", f"card says {split.get('num_examples')} examples, the shards hold {rows}", CARD_FILE)

    def _missing_shards(self) -> bool:
        return any(p.kind == "missing_shard" for p in self.problems)

    # -- all -----------------------------------------------------------------------------------
    def check(self) -> list[Problem]:
        if not self.load_run():
            return self.problems
        self.load_stats()
        self.check_strays()
        for shard in self.expected:
            stats = self.stats.get(shard)
            if stats is not None:
                self.check_shard(shard, stats)
                self.check_prompts(shard, stats)
        self.check_stray_data()
        self.check_unique_ids()
        self.check_card()
        return self.problems


def _feature_diff(found: Any, expected: Any) -> str:
    names = sorted(set(found) | set(expected))
    diffs = [f"{n}: {found.get(n)!r} vs {expected.get(n)!r}" for n in names if found.get(n) != expected.get(n)]
    return "; ".join(diffs[:3]) or "column order differs"


def _maps_of(column: Any, map_size: tuple[int, int] | None, dtype: str) -> list[tuple[np.ndarray | None, str]]:
    """Per row of an Array3D column (stored as list<list<list<x>>>): the map array or an error."""
    import pyarrow as pa

    if isinstance(column.type, pa.ExtensionType):
        column = column.storage
    out: list[tuple[np.ndarray | None, str]] = []
    for i in range(len(column)):
        cell = column[i]
        if not cell.is_valid:
            out.append((None, "token_maps is null"))
            continue
        tokens = cell.values  # list<list<x>>: one entry per token
        try:
            n = len(tokens)
            if n == 0:
                out.append((np.zeros((0,) + tuple(map_size or (0, 0)), dtype=dtype), ""))
                continue
            rows = tokens.flatten()
            h_lengths = np.asarray(tokens.value_lengths())
            w_lengths = np.asarray(rows.value_lengths())
            if (h_lengths != h_lengths[0]).any() or (w_lengths != w_lengths[0]).any():
                out.append((None, "ragged map rows"))
                continue
            values = rows.flatten()
            if values.null_count:
                out.append((None, "maps contain nulls"))
                continue
            array = values.to_numpy(zero_copy_only=False).reshape(n, int(h_lengths[0]), int(w_lengths[0]))
            out.append((array, ""))
        except (ValueError, TypeError, IndexError) as error:
            out.append((None, f"maps do not form an array ({error})"))
    return out


def validate_output(path: str) -> list[Problem]:
    """Every problem of the output folder at ``path`` (local or fsspec URL); ``[]`` when sound."""
    return _Checker(path).check()


def damaged_shards(problems: Iterable[Problem]) -> set[str]:
    """Shards whose files must be deleted and regenerated to fix ``problems``."""
    return {p.shard for p in problems if p.shard and p.kind in SHARD_DAMAGE}


def repair_output(path: str, prompts: str | None = None, beam_args: list[str] | None = None) -> list[Problem]:
    """Delete damaged shards and stray files, regenerate those shards; return the problems left.

    The settings come from ``run.json``; ``prompts`` replaces the recorded corpus path (needed when
    the corpus moved or the recorded path was relative to another folder). Holds the output's run
    lock while deleting, so a running job is never damaged.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from ..lock import RunLock
    from ..options import RunSettings
    from ..driver import run

    problems = validate_output(path)
    if not problems:
        return []
    if any(p.kind == "run_json" for p in problems):
        return problems  # nothing to regenerate from
    layout = OutputLayout(path)
    run_info = layout.read_json(layout.path(RUN_FILE))
    settings = RunSettings.from_dict(run_info["settings"])
    settings = replace(settings, output=path, prompts=prompts or settings.prompts, overwrite=False)
    lock = RunLock(layout)
    lock.acquire()
    try:
        shards = damaged_shards(problems)
        for shard in sorted(shards):
            logger.info("repair: deleting shard %s", shard)
            for fmt in FORMAT_DIRS:
                _rm(layout, layout.data_file(shard, fmt))
            _rm(layout, layout.failures_file(shard))
            _rm(layout, layout.stats_file(shard))
        for problem in problems:
            if problem.kind == "stray_file" and problem.file:
                logger.info("repair: deleting stray file %s", problem.file)
                _rm(layout, layout.path(problem.file))
    finally:
        lock.release()
    beam_args = list(beam_args or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.insert(0, "--runner=FnApiRunner")
    options = PipelineOptions(beam_args)
    run(settings, options)
    return validate_output(path)


def _rm(layout: OutputLayout, full: str) -> None:
    if layout.exists(full):
        layout.fs.rm(full)

"""Preparing an output folder for a run: path checks, resume decisions, manifests, read failures, stats."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from schemas.output_records import FailureRecord, ShardStats, ShardSummary, failure_lines
from transforms.shards.layout import FAILURES_DIR, MANIFEST_DIR, RUN_FILE, STATS_DIR, TMP_DIR, OutputLayout
from transforms.corpus import Corpus, CorpusError, CorpusScan, PromptRecord
from transforms.corpus.processes import collection_paused, map_in_processes
from transforms.shards.sharding import ShardSpec

from .errors import OutputError
from .ownership import READ_FAILURES, remove_ours

logger = logging.getLogger(__name__)


_JSON_ASCII = json.encoder.encode_basestring_ascii
_JSON_TEXT = json.encoder.encode_basestring


def digest_text(p: PromptRecord) -> str:
    """``json.dumps([id, prompt, seed, negative_prompt])``, spelled out at C speed (the digest's input)."""
    return f"[{_JSON_ASCII(p.id)}, {_JSON_ASCII(p.prompt)}, {int(p.seed)}, {_json_or_null(p.negative_prompt, _JSON_ASCII)}]"


def manifest_line(p: PromptRecord) -> str:
    """``json.dumps(p._asdict(), ensure_ascii=False)``, spelled out at C speed (one manifest line)."""
    return (f'{{"index": {int(p.index)}, "id": {_JSON_TEXT(p.id)}, "prompt": {_JSON_TEXT(p.prompt)}, '
            f'"seed": {int(p.seed)}, "negative_prompt": {_json_or_null(p.negative_prompt, _JSON_TEXT)}}}')


def _json_or_null(text: str | None, encode: Any) -> str:
    return "null" if text is None else encode(text)


def digest_bytes(prompts: list[PromptRecord]) -> bytes:
    """What the digest of these prompts is fed."""
    return "".join(map(digest_text, prompts)).encode("utf-8", "surrogatepass")


class PromptDigest:
    """Hash of the prompts (ids, text, seeds, negatives) in order, fed a shard at a time."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        """Feed ``digest_bytes`` of the next prompts, in order (the same hash however they are split)."""
        self._hash.update(data)

    def add_file(self, path: Path) -> None:
        """Feed what ``digest_bytes`` of the next prompts were written to ``path``."""
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                self.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


def require_prompts(corpus: Corpus | CorpusScan, source: str) -> None:
    """Refuse a corpus without a single usable prompt, before anything is written."""
    if corpus.num_prompts:
        return
    parts = []
    if corpus.failures:
        first = corpus.failures[0]
        parts.append(f"{len(corpus.failures)} unreadable rows, first at line {first.line}: {first.reason}")
    if corpus.blank:
        parts.append(f"{corpus.blank} blank rows")
    raise CorpusError(f"--prompts {source}: no usable prompts ({'; '.join(parts) or 'the corpus is empty'})")


def check_output_path(layout: OutputLayout) -> None:
    """Refuse an output that cannot be written, with one clear line (after
    ``ownership.require_usable_output``: the probe goes only into a new, empty or own folder)."""
    try:
        layout.makedirs(TMP_DIR)
        probe = layout.path(TMP_DIR, f"probe-{os.getpid()}")
        with layout.fs.open(probe, "wb") as fh:
            fh.write(b"ok")
        layout.fs.rm(probe)
    except OSError as error:
        raise OutputError(f"--output {layout.root}: not writable ({error.strerror or error})") from None


def reset_output(layout: OutputLayout) -> None:
    """``--overwrite``: delete what earlier runs wrote (``ownership.remove_ours``: a user's files stay), and say so."""
    logger.info("--overwrite: %s", remove_ours(layout).line("the earlier run"))


def check_resume(layout: OutputLayout, fingerprint: str) -> None:
    """Refuse to mix runs with different settings in one output (``--overwrite`` resets it first)."""
    run_file = layout.path(RUN_FILE)
    has_previous = layout.exists(run_file) or layout.list(STATS_DIR, ".json")
    if not has_previous:
        return
    previous = layout.read_json(run_file).get("fingerprint") if layout.exists(run_file) else None
    if previous != fingerprint:
        raise OutputError(
            f"--output {layout.root} holds a run with other settings or prompts "
            f"(fingerprint {previous} vs {fingerprint}); use a new --output or pass --overwrite"
        )


def clean_temporaries(layout: OutputLayout) -> None:
    """Remove temp files left by crashed writers (none can be live: we hold the lock)."""
    layout.remove(layout.path(TMP_DIR), recursive=True)


def committed_shards(layout: OutputLayout) -> set[str]:
    """Names of shards whose stats marker exists."""
    return {os.path.basename(p)[: -len(".json")] for p in layout.list(STATS_DIR, ".json")}


def write_manifests(layout: OutputLayout, prompts: Iterable[PromptRecord], specs: list[ShardSpec], pending: set[str]) -> str:
    """Stream the prompts (in input order, split by ``specs``): write each pending shard's prompts
    (JSON lines) for the workers as its last prompt is read; returns the prompts' digest. Holds
    one shard's prompts at a time."""
    layout.makedirs(MANIFEST_DIR)
    digest = PromptDigest()
    with collection_paused():
        _write_shards(layout, prompts, specs, pending, digest.update)
    return digest.hexdigest()


def write_scan_manifests(layout: OutputLayout, corpus: CorpusScan, specs: list[ShardSpec], pending: set[str], workers: int) -> str:
    """``write_manifests`` of a scan's prompts; a scan read in lanes (``transforms.corpus.lanes``)
    is written by up to ``workers`` processes, a run of shards each, starting near a lane's first
    prompt, with the same manifests and digest."""
    groups = _shard_groups(specs, corpus.part_starts()) if workers > 1 else [specs]
    if len(groups) < 2:
        return write_manifests(layout, corpus.records(), specs, pending)
    layout.makedirs(MANIFEST_DIR)
    paths = [corpus.folder / f"digest-{i:04d}" for i in range(len(groups))]
    map_in_processes(_write_group, [(layout, corpus, group, pending, path) for group, path in zip(groups, paths)], workers)
    digest = PromptDigest()
    for path in paths:
        digest.add_file(path)
        path.unlink()
    return digest.hexdigest()


def _shard_groups(specs: list[ShardSpec], starts: list[int]) -> list[list[ShardSpec]]:
    """``specs`` in runs, each from the shard whose start is nearest a spill part's first prompt
    (its process then reads little of an earlier part)."""
    firsts = [spec.start for spec in specs]
    cuts = sorted({_nearest(firsts, start) for start in starts} | {0})
    return [specs[low:high] for low, high in zip(cuts, [*cuts[1:], len(specs)])]


def _nearest(firsts: list[int], value: int) -> int:
    """The index of the sorted ``firsts`` nearest ``value`` (the earlier one on a tie)."""
    i = bisect.bisect_left(firsts, value)
    return i - 1 if i == len(firsts) or (i > 0 and value - firsts[i - 1] <= firsts[i] - value) else i


def _write_group(layout: OutputLayout, corpus: CorpusScan, specs: list[ShardSpec], pending: set[str], digest_path: Path) -> None:
    """One process' run of shards: its pending manifests, and what the digest is fed to ``digest_path``."""
    with digest_path.open("wb") as fh:
        _write_shards(layout, corpus.records(specs[0].start, specs[-1].stop), specs, pending, fh.write)


def _write_shards(layout: OutputLayout, prompts: Iterable[PromptRecord], specs: list[ShardSpec], pending: set[str],
                  feed: Callable[[bytes], Any]) -> None:
    stream = iter(prompts)
    for spec in specs:
        shard = list(itertools.islice(stream, spec.stop - spec.start))
        feed(digest_bytes(shard))
        name = spec.name
        if name in pending:
            text = "\n".join(map(manifest_line, shard)) + "\n"
            layout.write_bytes_atomic(layout.manifest_file(name), text.encode("utf-8", "surrogatepass"))


def write_read_failures(layout: OutputLayout, corpus: Corpus | CorpusScan) -> None:
    """Record corpus rows that could not become prompts."""
    path = layout.path(FAILURES_DIR, READ_FAILURES)
    if not corpus.failures:
        layout.remove(path)
        return
    records = [FailureRecord(f.id, "read", f.reason, source=f.source, line=f.line, raw=f.raw) for f in corpus.failures]
    layout.write_bytes_atomic(path, failure_lines(records))


def collect_stats(layout: OutputLayout, known: dict[str, ShardSummary] | None = None) -> list[ShardSummary]:
    """Every committed shard's summary (its marker without the id lists), in shard order; markers
    already in ``known`` (by path; they never change once written) are not read again."""
    summaries = []
    for path in layout.list(STATS_DIR, ".json"):
        summary = known.get(path) if known is not None else None
        if summary is None:
            summary = ShardStats.from_dict(layout.read_json(path)).summary()
            if known is not None:
                known[path] = summary
        summaries.append(summary)
    return summaries


def write_json_if_changed(layout: OutputLayout, name: str, obj: Any) -> None:
    """Write ``obj`` to the root file ``name`` unless it already holds it (a rerun changes no file)."""
    path = layout.path(name)
    if not layout.exists(path) or layout.read_json(path) != obj:
        layout.write_json_atomic(path, obj)

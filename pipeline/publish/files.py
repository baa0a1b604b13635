"""Which files of an output are published, with their sizes and sha256, and the validation gate.

Published: the data shards (``data/``, ``wds/``), the dataset card (``README.md``), the run summary
(``run.json``) and the preview (``preview/``, when ``daam-datasets preview`` made one).
Not published: the commit markers and bookkeeping (``_stats/``, ``_manifest/``, ``.lock``,
``.tmp/``, hidden files) and the failure records (``_failures/``, unless ``include_failures``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

from huggingface_hub.utils.sha import sha_fileobj

from schemas.output_records import ShardStats
from transforms.shards.layout import (
    CARD_FILE,
    FAILURES_DIR,
    LOCK_FILE,
    MANIFEST_DIR,
    PREVIEW_DIR,
    STATS_DIR,
    TMP_DIR,
    OutputLayout,
)

from ..card import PLACEHOLDER_REPO, PREVIEW_IMAGE, for_repo, with_preview
from ..errors import DamagedOutput
from ..validate import validate_output
from .plan import DATA_PREFIXES, LocalFile, PublishOptions, PublishPlan, RemoteFile, make_plan

logger = logging.getLogger(__name__)

BOOKKEEPING = (STATS_DIR, MANIFEST_DIR, TMP_DIR, LOCK_FILE)  # never published
MAX_LISTED_PROBLEMS = 10


def is_hidden(rel: str) -> bool:
    """Whether a relative path has a hidden part (.lock, .tmp/, .git*, hidden temporaries)."""
    return any(part.startswith(".") for part in rel.split("/"))


def excluded(rel: str, include_failures: bool, include_preview: bool) -> bool:
    """Whether the output file at ``rel`` stays unpublished."""
    top = rel.split("/", 1)[0]
    if is_hidden(rel) or top in BOOKKEEPING:
        return True
    if top == FAILURES_DIR and not include_failures:
        return True
    return top == PREVIEW_DIR and not include_preview


def managed_prefixes(include_failures: bool, include_preview: bool) -> tuple[str, ...]:
    """Folders this tool owns at the destination: files there that the output lacks are stale."""
    prefixes = list(DATA_PREFIXES)
    if include_preview:
        prefixes.append(PREVIEW_DIR + "/")
    if include_failures:
        prefixes.append(FAILURES_DIR + "/")
    return tuple(prefixes)


def walk(layout: OutputLayout) -> Iterator[tuple[str, str, int]]:
    """``(full path, path relative to the root, bytes)`` of every file under the root, sorted."""
    base = layout.base.rstrip("/")
    for full, info in sorted(layout.fs.find(base, withdirs=False, detail=True).items()):
        yield full, layout.relative(full), int(info.get("size") or 0)


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of generated content, as the Hub computes an upload's LFS oid."""
    return sha_fileobj(io.BytesIO(data)).hex()


def _known_hashes(layout: OutputLayout) -> dict[str, tuple[int, str]]:
    """``{path: (bytes, sha256)}`` of data files from the stats markers (no need to re-hash)."""
    known: dict[str, tuple[int, str]] = {}
    for full in layout.list(STATS_DIR, ".json"):
        try:
            stats = ShardStats.from_dict(layout.read_json(full))
        except (OSError, ValueError):
            logger.debug("unreadable stats marker %s: its files are hashed again", full)
            continue
        known.update({info.path: (info.bytes, info.sha256) for info in stats.files.values()})
    return known


def _card(layout: OutputLayout, f: LocalFile, has_preview: bool, repo_id: str) -> LocalFile:
    """The card as published (a user's edits kept): with the Preview section only when the preview
    goes along, the load example naming ``repo_id``."""
    text = with_preview(layout.read_text(f.full), PREVIEW_IMAGE if has_preview else None)
    if repo_id != PLACEHOLDER_REPO:
        text = for_repo(text, repo_id)
    data = text.encode("utf-8")
    return replace(f, size=len(data), sha256=bytes_sha256(data), data=data)


def collect_files(
    output: str,
    include_failures: bool = False,
    include_preview: bool = True,
    repo_id: str = PLACEHOLDER_REPO,
) -> list[LocalFile]:
    """Every file of the output to publish, sorted; the card names ``repo_id`` in its load example."""
    layout = OutputLayout(output)
    known = _known_hashes(layout)
    files: list[LocalFile] = []
    for full, rel, size in walk(layout):
        if excluded(rel, include_failures, include_preview):
            continue
        sha = known[rel][1] if rel in known and known[rel][0] == size else layout.sha256(full)
        files.append(LocalFile(rel, full, size, sha))
    has_preview = include_preview and any(f.path == PREVIEW_IMAGE for f in files)
    return [_card(layout, f, has_preview, repo_id) if f.path == CARD_FILE else f for f in files]


def check_output(output: str, validate: Callable[[str], list] | None = None) -> None:
    """Raise ``DamagedOutput`` listing the problems if ``validate`` (default: ``validate_output``)
    finds any."""
    problems = (validate or validate_output)(output)
    if not problems:
        return
    listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS])
    more = f"\n  … and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
    raise DamagedOutput(
        f"{output}: refusing to publish a damaged output ({len(problems)} problems); "
        f"run `daam-datasets validate {output} --repair` first\n{listed}{more}"
    )


def plan_publish(
    output: str,
    target: str,
    remote: dict[str, RemoteFile],
    same: Callable[[LocalFile, RemoteFile], bool],
    options: PublishOptions,
    repo_id: str = PLACEHOLDER_REPO,
) -> PublishPlan:
    """The plan for publishing ``output`` to ``target``, which holds ``remote``."""
    local = collect_files(output, options.include_failures, options.include_preview, repo_id)
    prefixes = managed_prefixes(options.include_failures, options.include_preview)
    return make_plan(options.label or output, target, local, remote, same, prefixes, options.max_files, options.max_bytes)

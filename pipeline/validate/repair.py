"""``repair_output``: delete what is damaged (a shard's files, marker and failure records; stray
files) and regenerate just those shards with the settings recorded in ``run.json``.

Only files of ours are deleted (``pipeline.ownership``): a damaged shard's own files, our
temporaries, files named like our shards' (an uncommitted shard); a stray file of a user's (a
``loader.py``, a copied shard under another name) makes the repair refuse before it changes anything."""

from __future__ import annotations

import logging
from dataclasses import replace

from schemas.output_records import RunInfo
from transforms.shards.layout import FORMAT_DIRS, RUN_FILE, OutputLayout

from ..errors import OutputError
from ..lock import RunLock
from ..ownership import refusal, remove_ours, scan
from .problems import Problem, damaged_shards
from .validator import validate_output

logger = logging.getLogger(__name__)


def repair_output(path: str, prompts: str | None = None, beam_args: list[str] | None = None) -> list[Problem]:
    """Delete damaged shards and stray files, regenerate those shards; return the problems left.

    The settings come from ``run.json``; ``prompts`` replaces the recorded corpus path (needed when
    the corpus moved or the recorded path was relative to another folder). Holds the output's run
    lock while deleting, so a running job is never damaged. Raises ``OutputError`` before anything
    changes when a stray file is not one of ours.
    """
    # Apache Beam and the driver load only when there is something to regenerate
    from ..beam_args import beam_options
    from ..driver import run
    from ..options import RunSettings

    problems = validate_output(path)
    if not problems:
        return []
    if any(p.kind == "run_json" for p in problems):
        return problems  # nothing to regenerate from
    layout = OutputLayout(path)
    run_info = RunInfo.from_dict(layout.read_json(layout.path(RUN_FILE)))
    settings = RunSettings.from_dict(run_info.settings)
    settings = replace(settings, output=path, prompts=prompts or settings.prompts, overwrite=False)
    _require_own_strays(layout, problems)
    with RunLock(layout):
        _delete_damage(layout, problems)
    run(settings, beam_options(list(beam_args or []), "validate"))
    return validate_output(path)


def _strays(problems: list[Problem]) -> set[str]:
    """The stray files ``validate`` reported."""
    return {p.file for p in problems if p.kind == "stray_file" and p.file}


def _require_own_strays(layout: OutputLayout, problems: list[Problem]) -> None:
    """Refuse, with one line, to repair an output whose stray files include a user's."""
    foreign = sorted(_strays(problems) - scan(layout).ours)
    if foreign:
        raise OutputError(refusal(layout.root, foreign, "--repair deletes only its own files: move them away and rerun",
                                  "holds stray files daam-datasets did not write"))


def _delete_damage(layout: OutputLayout, problems: list[Problem]) -> None:
    """Delete the files of damaged shards and the stray files of ours."""
    files = set(_strays(problems))
    for shard in sorted(damaged_shards(problems)):
        logger.info("repair: deleting shard %s", shard)
        paths = [layout.data_file(shard, fmt) for fmt in FORMAT_DIRS]
        files.update(layout.relative(p) for p in (*paths, layout.failures_file(shard), layout.stats_file(shard)))
    removal = remove_ours(layout, files)
    logger.info("repair: %s", removal.line("the damaged output"))

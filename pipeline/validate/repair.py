"""``repair_output``: delete what is damaged (a shard's files, marker and failure records; stray
files) and regenerate just those shards with the settings recorded in ``run.json``."""

from __future__ import annotations

import logging
from dataclasses import replace

from schemas.output_records import RunInfo
from transforms.layout import FORMAT_DIRS, RUN_FILE, OutputLayout

from ..lock import RunLock
from .problems import Problem, damaged_shards
from .validator import validate_output

logger = logging.getLogger(__name__)


def repair_output(path: str, prompts: str | None = None, beam_args: list[str] | None = None) -> list[Problem]:
    """Delete damaged shards and stray files, regenerate those shards; return the problems left.

    The settings come from ``run.json``; ``prompts`` replaces the recorded corpus path (needed when
    the corpus moved or the recorded path was relative to another folder). Holds the output's run
    lock while deleting, so a running job is never damaged.
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
    with RunLock(layout):
        _delete_damage(layout, problems)
    run(settings, beam_options(list(beam_args or []), "validate"))
    return validate_output(path)


def _delete_damage(layout: OutputLayout, problems: list[Problem]) -> None:
    """Delete the files of damaged shards and every stray file."""
    for shard in sorted(damaged_shards(problems)):
        logger.info("repair: deleting shard %s", shard)
        for fmt in FORMAT_DIRS:
            layout.remove(layout.data_file(shard, fmt))
        layout.remove(layout.failures_file(shard))
        layout.remove(layout.stats_file(shard))
    for problem in problems:
        if problem.kind == "stray_file" and problem.file:
            logger.info("repair: deleting stray file %s", problem.file)
            layout.remove(layout.path(problem.file))

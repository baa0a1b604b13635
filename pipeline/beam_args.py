"""Apache Beam's own options passed through the command line: checked, FnApiRunner by default."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, _BeamArgumentParser

from .errors import UsageError
from .options import DaamOptions

DEFAULT_RUNNER = "FnApiRunner"  # explicit: the DirectRunner's default tries to download Prism


def unknown_beam_args(args: list[str]) -> list[str]:
    """Arguments that no Beam options class (other than our own ``DaamOptions``) accepts."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__():
        if cls is not DaamOptions:
            cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    return unknown


def beam_options(args: list[str], command: str) -> PipelineOptions:
    """Beam options from pass-through arguments (``UsageError`` naming ``command`` for unknown
    ones); the runner is FnApiRunner unless ``--runner`` names another."""
    unknown = unknown_beam_args(args)
    if unknown:
        raise UsageError(f"{command}: unrecognized arguments: {' '.join(unknown)}")
    options = PipelineOptions(args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = DEFAULT_RUNNER
    return options

"""``publish --config segmentation``: the segmentation view of an output as a dataset of its own.

The output is validated, then exported with ``--layout hf`` (``pipeline.export``) into a temporary
folder: a dataset whose default config is the segmentation view (``data/train-*.parquet``, a
``validation`` split, ``id2label.json``, its card). That folder is what ``publish_to_path`` or
``publish_to_hub`` then publish, as they would any output; it is deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from ..card import PLACEHOLDER_REPO
from ..export import SegmentationSource, export_output
from .files import check_output
from .plan import DEFAULT_CONFIG, PublishOptions

logger = logging.getLogger(__name__)


def _sound(_: str) -> list:
    """The export's own check: it was made from a validated output a moment ago."""
    return []


@contextmanager
def segmentation_view(output: str, options: PublishOptions, repo_id: str = PLACEHOLDER_REPO) -> Iterator[tuple[str, PublishOptions]]:
    """The folder to publish instead of ``output`` and the options to publish it with.

    Refuses (``ExportError``) an output without a segmentation config before validating it, and a
    damaged output (``DamagedOutput``) before exporting it.
    """
    SegmentationSource.open(output)
    check_output(output, options.validate)
    with tempfile.TemporaryDirectory(prefix="daam-publish-segmentation-") as tmp:
        view = os.path.join(tmp, "segmentation")
        result = export_output(output, view, layout="hf", validation_fraction=options.validation_fraction, repo_id=repo_id)
        logger.info("segmentation view of %s: %d rows (%d train, %d validation)", output, result.rows, result.train,
                    result.validation)
        label = options.label or f"{output} (segmentation config)"
        yield view, replace(options, config=DEFAULT_CONFIG, validate=_sound, label=label)

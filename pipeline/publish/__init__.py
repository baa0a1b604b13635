"""``daam-datasets publish OUTPUT``: upload a validated output to the Hugging Face Hub
(``publish_to_hub``), or copy it to any fsspec destination (``publish_to_path``: a local folder,
``gs://``, ``s3://``).

The output is validated first (``pipeline.validate.validate_output``) and a damaged one is refused
(``pipeline.errors.DamagedOutput``); what is published is chosen in ``files``, batched into commits
in ``plan``, sent in ``hub`` or ``to_path``. ``--config segmentation`` publishes the segmentation
view instead, exported to a temporary folder first (``segmentation``).
"""

from .files import check_output, collect_files, managed_prefixes
from .hub import lfs_pointer, publish_to_hub
from .segmentation import segmentation_view
from .plan import (
    CONFIGS,
    DEFAULT_CONFIG,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    SEGMENTATION_CONFIG,
    SMALL_FILES_PER_COMMIT,
    Commit,
    LocalFile,
    PublishOptions,
    PublishPlan,
    PublishResult,
    RemoteFile,
    make_plan,
)
from .to_path import publish_to_path

__all__ = [
    "CONFIGS",
    "DEFAULT_CONFIG",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "SEGMENTATION_CONFIG",
    "SMALL_FILES_PER_COMMIT",
    "Commit",
    "LocalFile",
    "PublishOptions",
    "PublishPlan",
    "PublishResult",
    "RemoteFile",
    "check_output",
    "collect_files",
    "lfs_pointer",
    "make_plan",
    "managed_prefixes",
    "publish_to_hub",
    "publish_to_path",
    "segmentation_view",
]

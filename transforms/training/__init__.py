"""Training on daam-datasets outputs: joint image/target transforms, PyTorch datasets of
``(image, target)`` pairs (class labels or DAAM word masks), a padding collate and mean IoU.

No Beam, nothing of ``pipeline``; torch, PIL, numpy and ``datasets`` only. See
``examples/train_segformer.py`` for a complete fine-tuning loop.
"""

from .joint_transforms import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    segmentation_transforms,
    to_tensors,
)
from .metrics import MeanIoU, intersect_and_union, mean_iou
from .torch_data import (
    IterableSegmentationDataset,
    SegmentationDataset,
    collate,
    concept_target,
    item_generator,
    label_target,
    segmentation_dataset,
    word_target,
)

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "IterableSegmentationDataset",
    "MeanIoU",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "SegmentationDataset",
    "ToTensor",
    "collate",
    "concept_target",
    "intersect_and_union",
    "item_generator",
    "label_target",
    "mean_iou",
    "segmentation_dataset",
    "segmentation_transforms",
    "to_tensors",
    "word_target",
]

"""Transforms that move an image and its segmentation target together (torch and PIL only).

Every transform is called as ``transform(image, target, generator=None) -> (image, target)`` and
returns tensors: the image as float ``(3, H, W)`` (``[0, 1]`` until ``Normalize``), the target as
int64 ``(H, W)``. Inputs may be PIL images, numpy arrays or tensors (``to_tensors`` converts them),
so ``ToTensor`` need not come first. Random transforms draw only from ``generator`` (the global
torch RNG when ``None``): the same generator state gives the same result::

    train = Compose([ToTensor(), Resize(256), RandomCrop(224), RandomHorizontalFlip(), Normalize()])
    image, target = train(row["image"], row["label"], torch.Generator().manual_seed(0))

Geometry: ``Resize`` samples the image bilinearly (antialiased) and the target by nearest
neighbour (``nearest-exact``, PIL's rule, so labels stay labels); ``RandomCrop`` pads at the
bottom and right, the image with ``fill`` (0) and the target with ``ignore_index`` (255).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SegFormer's image processor (ImageNet statistics)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor]
Size = int | tuple[int, int]

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "JointTransform",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "segmentation_transforms",
    "to_tensors",
]


class JointTransform(Protocol):
    """``(image, target, generator) -> (image, target)``; see the module docstring."""

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair: ...


def _image_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.float() / 255 if image.dtype == torch.uint8 else image.float()
    array = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got shape {array.shape}")
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()


def _target_tensor(target: Any) -> torch.Tensor:
    if isinstance(target, Image.Image) and target.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"target image must hold class indices (mode L or P), got mode {target.mode}")
    tensor = target if isinstance(target, torch.Tensor) else torch.from_numpy(np.array(target))
    if tensor.ndim != 2:
        raise ValueError(f"target must be (H, W), got shape {tuple(tensor.shape)}")
    return tensor.long()


def to_tensors(image: Any, target: Any) -> Pair:
    """An image (PIL, ``(H, W, 3)`` array or ``(3, H, W)`` tensor) and its target (PIL ``L``/``P``,
    array or tensor of class indices) as float ``(3, H, W)`` and int64 ``(H, W)`` of one size."""
    image_t, target_t = _image_tensor(image), _target_tensor(target)
    if image_t.shape[-2:] != target_t.shape:
        raise ValueError(f"image is {tuple(image_t.shape[-2:])} but target is {tuple(target_t.shape)} (height, width)")
    return image_t, target_t


def _size(size: Size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(height), int(width)


class ToTensor:
    """Convert to tensors (``to_tensors``); the image scaled to ``[0, 1]``."""

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        return to_tensors(image, target)


class Resize:
    """Resize both to ``size`` (an int: a square side; or ``(height, width)``)."""

    def __init__(self, size: Size) -> None:
        self.size = _size(size)

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        image, target = to_tensors(image, target)
        if tuple(target.shape) == self.size:
            return image, target
        image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
        target = F.interpolate(target[None, None].float(), size=self.size, mode="nearest-exact")[0, 0]
        return image, target.long()


class RandomCrop:
    """A random ``size`` window; smaller inputs are first padded at the bottom and right (image
    with ``fill``, target with ``ignore_index``)."""

    def __init__(self, size: Size, fill: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        self.size, self.fill, self.ignore_index = _size(size), fill, ignore_index

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        image, target = to_tensors(image, target)
        height, width = self.size
        pad = (0, max(0, width - target.shape[1]), 0, max(0, height - target.shape[0]))
        if any(pad):
            image = F.pad(image, pad, value=self.fill)
            target = F.pad(target, pad, value=self.ignore_index)
        top = int(torch.randint(target.shape[0] - height + 1, (1,), generator=generator))
        left = int(torch.randint(target.shape[1] - width + 1, (1,), generator=generator))
        return image[:, top : top + height, left : left + width], target[top : top + height, left : left + width]


class RandomHorizontalFlip:
    """Mirror both left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        image, target = to_tensors(image, target)
        if float(torch.rand((), generator=generator)) < self.p:
            return image.flip(-1), target.flip(-1)
        return image, target


class Normalize:
    """``(image - mean) / std`` per channel; the target is untouched. Defaults: ImageNet's."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        image, target = to_tensors(image, target)
        return (image - self.mean) / self.std, target


class Compose:
    """Apply ``transforms`` in order, all drawing from the one ``generator``."""

    def __init__(self, transforms: Sequence[JointTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: Any, generator: torch.Generator | None = None) -> Pair:
        pair = to_tensors(image, target)
        for transform in self.transforms:
            pair = transform(*pair, generator=generator)
        return pair


def segmentation_transforms(
    size: Size,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """A SegFormer-style pipeline: resize to ``size``, (train: random horizontal flip), normalise."""
    steps: list[JointTransform] = [ToTensor(), Resize(size)]
    if train:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(mean, std))
    return Compose(steps)

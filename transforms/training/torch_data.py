"""PyTorch datasets of ``(image, target)`` pairs from daam-datasets outputs read with ``datasets``.

    from datasets import load_dataset
    from torch.utils.data import DataLoader
    from transforms.training import collate, segmentation_dataset, segmentation_transforms

    rows = load_dataset("out/voc", "segmentation", split="train")          # or streaming=True
    data = segmentation_dataset(rows, transforms=segmentation_transforms(256, train=True))
    images, targets = next(iter(DataLoader(data, batch_size=8, collate_fn=collate)))

Each item is ``(image, target)``: float ``(3, H, W)`` and int64 ``(H, W)``. Targets:

* ``"label"``: the ``label`` column (``--classes``): 0 background, 1..K classes, 255 ignore.
* ``("word", "cat")``: DAAM's τ-mask of the word or phrase from the default config's
  ``token_maps`` (``heatmap.word_mask`` of the mean map of every token of every occurrence, found
  with ``words.row_spans``, at the image's size; uint8 maps dequantised, ``schemas.maps``): 1 where
  the word acts, 0 elsewhere. Rows whose prompt lacks the word are dropped (``missing="skip"``,
  the default: a target of nothing but 255 gives a NaN cross-entropy) or kept with an
  all-``ignore_index`` target (``missing="ignore"``, which keeps the indices of the source dataset).
* ``("concept", "cat")``: the same τ-mask from the concept's ConceptAttention map (``concept_maps``
  of a ``--concept-maps`` run; the row's ``concepts`` named case-insensitively); rows without the
  concept as for words.

A map-style ``datasets.Dataset`` gives a ``torch.utils.data.Dataset``; a ``datasets.IterableDataset``
(``streaming=True``, ``to_iterable_dataset()``) gives a ``torch.utils.data.IterableDataset``. In a
``DataLoader`` with ``num_workers > 0`` the streamed dataset shards itself: ``datasets`` gives each
worker its own data files (shards), so no row is read twice; workers beyond the number of shards
stay idle (``to_iterable_dataset(num_shards=...)`` or more files give more shards).

Augmentation is reproducible whatever the worker or order: each item's transforms draw from a
``torch.Generator`` seeded by ``(seed, epoch, row id)`` (``item_generator``; the row index when a
row has no ``id``, the position in the worker's stream when streamed). Call ``set_epoch`` to vary
it between epochs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import datasets
import numpy as np
import torch
import torch.utils.data

from schemas.maps import row_maps

from ..attribution.config import DEFAULT_THRESHOLD
from ..attribution.heatmap import word_mask
from ..attribution.words import row_spans
from .joint_transforms import IGNORE_INDEX, JointTransform, Pair, ToTensor

Target = str | tuple[str, str]
Missing = Literal["skip", "ignore"]
TargetReader = Callable[[Mapping[str, Any]], torch.Tensor]

__all__ = [
    "IterableSegmentationDataset",
    "SegmentationDataset",
    "collate",
    "item_generator",
    "label_target",
    "concept_target",
    "segmentation_dataset",
    "word_target",
]


def label_target(row: Mapping[str, Any], column: str = "label") -> torch.Tensor:
    """A row's class-index label image (``L``/``P`` PIL image or array) as int64 ``(H, W)``."""
    return torch.from_numpy(np.array(row[column])).long()


def _image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image or ``(H, W, 3)`` array."""
    return (image.height, image.width) if hasattr(image, "height") else tuple(np.shape(image)[:2])


def word_target(
    row: Mapping[str, Any],
    word: str,
    threshold: float = DEFAULT_THRESHOLD,
    ignore_index: int = IGNORE_INDEX,
    image_column: str = "image",
) -> torch.Tensor:
    """DAAM's τ-mask of ``word`` in a default-config row at the image's size, int64 ``(H, W)``:
    1 where the word's map is above ``threshold``, 0 elsewhere; all ``ignore_index`` when the
    prompt lacks the word."""
    size = _image_size(row[image_column])
    try:
        spans = row_spans(row, word)
    except ValueError:
        return torch.full(size, ignore_index, dtype=torch.int64)
    maps = torch.from_numpy(row_maps(row))
    rows = [i for start, end in spans for i in range(start, end)]
    return word_mask(maps[rows].mean(0), size, threshold).long()


def concept_target(
    row: Mapping[str, Any],
    concept: str,
    threshold: float = DEFAULT_THRESHOLD,
    ignore_index: int = IGNORE_INDEX,
    image_column: str = "image",
) -> torch.Tensor:
    """The τ-mask of ``concept``'s ConceptAttention map in a ``--concept-maps`` row at the image's
    size, int64 ``(H, W)``; all ``ignore_index`` when the row has no such concept."""
    size = _image_size(row[image_column])
    names = [str(c).lower() for c in row.get("concepts") or []]
    if concept.lower() not in names:
        return torch.full(size, ignore_index, dtype=torch.int64)
    maps = torch.from_numpy(row_maps(row, "concept_maps"))
    return word_mask(maps[names.index(concept.lower())], size, threshold).long()


def _has_concept(concepts: Sequence[str] | None, *, concept: str) -> bool:
    return concept.lower() in [str(c).lower() for c in concepts or []]


def _row_has_concept(row: Mapping[str, Any], *, concept: str) -> bool:
    return _has_concept(row.get("concepts"), concept=concept)


def _has_word(words: Sequence[Mapping[str, Any]], tokens: Sequence[str] | None = None, *, word: str) -> bool:
    try:
        row_spans({"words": words, "tokens": tokens}, word)
    except ValueError:
        return False
    return True


def _row_has_word(row: Mapping[str, Any], *, word: str) -> bool:
    return _has_word(row["words"], row.get("tokens"), word=word)


def item_generator(seed: int, epoch: int, key: int | str) -> torch.Generator:
    """A generator seeded by ``(seed, epoch, key)``; a string key (a row id) hashes stably."""
    if isinstance(key, str):
        key = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    state = np.random.SeedSequence([seed, epoch, key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _Items:
    """What both dataset kinds share: reading a row's pair and transforming it reproducibly."""

    def __init__(
        self, data: Any, read_target: TargetReader, transforms: JointTransform | None, seed: int, image_column: str
    ) -> None:
        self.data, self.read_target, self.seed, self.image_column = data, read_target, seed, image_column
        self.transforms = transforms if transforms is not None else ToTensor()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different augmentations in ``epoch`` (effective in workers started afterwards)."""
        self.epoch = epoch

    def _item(self, row: Mapping[str, Any], fallback_key: int) -> Pair:
        generator = item_generator(self.seed, self.epoch, row.get("id", fallback_key))
        return self.transforms(row[self.image_column], self.read_target(row), generator)


class SegmentationDataset(_Items, torch.utils.data.Dataset):
    """``(image, target)`` pairs of a map-style ``datasets.Dataset`` (see the module docstring)."""

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Pair:
        return self._item(self.data[index], index)


class IterableSegmentationDataset(_Items, torch.utils.data.IterableDataset):
    """``(image, target)`` pairs of a ``datasets.IterableDataset``, sharded over DataLoader workers
    by ``datasets`` itself (see the module docstring)."""

    def set_epoch(self, epoch: int) -> None:
        """Also reshuffles the stream when it was shuffled (``datasets``' own ``set_epoch``)."""
        super().set_epoch(epoch)
        self.data.set_epoch(epoch)

    def __iter__(self) -> Iterator[Pair]:
        for position, row in zip(itertools.count(), self.data):
            yield self._item(row, position)


def _columns(data: Any) -> list[str] | None:
    return list(data.column_names) if data.column_names is not None else None


_MAP_TARGETS = {  # kind -> (target reader, filter on columns, its columns, filter on rows, needed columns)
    "word": (word_target, _has_word, ("words", "tokens"), _row_has_word, ("words", "token_maps")),
    "concept": (concept_target, _has_concept, ("concepts",), _row_has_concept, ("concepts", "concept_maps")),
}


def _target_reader(target: Target, threshold: float, ignore_index: int, image_column: str) -> tuple[TargetReader, Any]:
    """The row → target function and, for a word or concept target, its ``_MAP_TARGETS`` entry
    with the name bound."""
    if isinstance(target, str):
        return functools.partial(label_target, column=target), None
    if isinstance(target, tuple) and len(target) == 2 and target[0] in _MAP_TARGETS and isinstance(target[1], str):
        kind, name = target
        read, keep, keep_columns, keep_row, needed = _MAP_TARGETS[kind]
        reader = functools.partial(read, **{kind: name}, threshold=threshold, ignore_index=ignore_index,
                                   image_column=image_column)
        bound = (functools.partial(keep, **{kind: name}), keep_columns, functools.partial(keep_row, **{kind: name}), needed)
        return reader, bound
    raise ValueError(f"target must be a label column name, ('word', WORD) or ('concept', CONCEPT), got {target!r}")


def segmentation_dataset(
    hf_dataset: datasets.Dataset | datasets.IterableDataset,
    target: Target = "label",
    transforms: JointTransform | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    missing: Missing = "skip",
    seed: int = 0,
    image_column: str = "image",
    ignore_index: int = IGNORE_INDEX,
) -> SegmentationDataset | IterableSegmentationDataset:
    """A torch dataset of ``(image, target)`` pairs of ``hf_dataset`` (one split).

    ``target``: a label column (``"label"``), ``("word", WORD)`` or ``("concept", CONCEPT)``; ``transforms``: a joint
    transform (``ToTensor()`` when ``None``); ``threshold``: τ of word masks; ``missing``: rows
    without the word are skipped or given an all-``ignore_index`` target; ``seed``: of the
    per-item augmentation generators.
    """
    if not isinstance(hf_dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or datasets.IterableDataset (one split), got {type(hf_dataset).__name__}")
    if missing not in ("skip", "ignore"):
        raise ValueError(f"missing must be 'skip' or 'ignore', got {missing!r}")
    read_target, maps = _target_reader(target, threshold, ignore_index, image_column)
    columns = _columns(hf_dataset)
    needed = [image_column, *(maps[3] if maps is not None else (target,))]
    absent = [name for name in needed if columns is not None and name not in columns]
    if absent:
        raise ValueError(
            f"dataset has no column {', '.join(map(repr, absent))} (columns: {columns}); labels come from "
            "the 'segmentation' config of a run with --classes, word targets from the default config, concept "
            "targets from a run with --concept-maps"
        )
    if maps is not None and missing == "skip":
        keep_columns, names, keep_row, _ = maps
        if columns is None:  # a stream of unknown columns: whole rows
            keep, input_columns = keep_row, None
        else:
            keep, input_columns = keep_columns, [c for c in names if c in columns]
        options = {"keep_in_memory": True} if isinstance(hf_dataset, datasets.Dataset) else {}
        hf_dataset = hf_dataset.filter(keep, input_columns=input_columns, **options)
    kind = IterableSegmentationDataset if isinstance(hf_dataset, datasets.IterableDataset) else SegmentationDataset
    return kind(hf_dataset, read_target, transforms, seed, image_column)


def collate(batch: Sequence[Pair], ignore_index: int = IGNORE_INDEX, fill: float = 0.0) -> Pair:
    """Stack pairs into ``(B, 3, H, W)`` and ``(B, H, W)``, padding each at the bottom and right to
    the batch's largest height and width (images with ``fill``, targets with ``ignore_index``)."""
    if not batch:
        raise ValueError("empty batch")
    height = max(target.shape[-2] for _, target in batch)
    width = max(target.shape[-1] for _, target in batch)
    first_image, first_target = batch[0]
    images = first_image.new_full((len(batch), first_image.shape[0], height, width), fill)
    targets = first_target.new_full((len(batch), height, width), ignore_index)
    for k, (image, target) in enumerate(batch):
        images[k, :, : image.shape[-2], : image.shape[-1]] = image
        targets[k, : target.shape[-2], : target.shape[-1]] = target
    return images, targets

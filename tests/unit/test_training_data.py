"""transforms.training: joint transforms keep image and target aligned, torch datasets of labels and
DAAM word masks (map-style and streamed, with DataLoader workers), the padding collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from transforms.attribution.heatmap import word_mask
from transforms.training import (
    Compose,
    IterableSegmentationDataset,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    SegmentationDataset,
    ToTensor,
    collate,
    segmentation_dataset,
    segmentation_transforms,
)

HEIGHT, WIDTH = 12, 20  # non-square, and HEIGHT * WIDTH < 255: every target value is a coordinate


def coordinate_pair() -> tuple[PILImage.Image, PILImage.Image]:
    """An image whose red/green channels are each pixel's row/column and a target of row * WIDTH + col."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    return PILImage.fromarray(image), PILImage.fromarray((rows * WIDTH + cols).astype(np.uint8), mode="L")


def coordinates(image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) read from the image channels and from the target, each (2, H, W) float."""
    from_image = image[:2] * 255
    from_target = torch.stack([target // WIDTH, target % WIDTH]).float()
    return from_image, from_target


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_keep_image_and_target_aligned(seed: int):
    transform = Compose([RandomCrop((16, 14)), RandomHorizontalFlip()])  # pads the height, crops the width
    image, target = transform(*coordinate_pair(), generator=torch.Generator().manual_seed(seed))
    assert image.shape == (3, 16, 14) and image.dtype == torch.float32
    assert target.shape == (16, 14) and target.dtype == torch.int64
    padded = target == 255
    assert padded.sum() == 4 * 14 and padded[HEIGHT:].all()  # bottom rows padded with 255, image with 0
    assert (image[:, HEIGHT:] == 0).all()
    from_image, from_target = coordinates(image[:, :HEIGHT], target[:HEIGHT])
    torch.testing.assert_close(from_image, from_target, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(6, 10), (24, 40), (9, 31)])
def test_resize_moves_both_to_the_same_place(size: tuple[int, int]):
    image, target = Resize(size)(*coordinate_pair())
    assert image.shape == (3, *size) and target.shape == size
    assert set(target.unique().tolist()) <= set(range(HEIGHT * WIDTH))  # nearest: labels stay labels
    from_image, from_target = coordinates(image, target)
    assert (from_image - from_target).abs().max() <= 1.0  # bilinear vs nearest: within a source pixel


def test_random_transforms_follow_the_generator():
    transform = segmentation_transforms((10, 10), train=True)
    transform.transforms.insert(2, RandomCrop(8))
    outputs = [transform(*coordinate_pair(), generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3)]
    torch.testing.assert_close(outputs[0], outputs[1])
    assert any(not torch.equal(outputs[0][1], other[1]) for other in outputs[2:])


def test_normalize_and_to_tensor():
    image, target = Compose([ToTensor(), Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])(*coordinate_pair())
    assert image.min() >= -1 and image[2].eq(-1).all()
    torch.testing.assert_close(target, torch.from_numpy(np.array(coordinate_pair()[1])).long())
    with pytest.raises(ValueError, match=r"image is \(12, 20\) but target is \(3, 3\)"):
        ToTensor()(coordinate_pair()[0], np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="mode L or P"):
        ToTensor()(*[coordinate_pair()[0]] * 2)


def test_collate_pads_targets_with_ignore_and_images_with_zero():
    small = (torch.ones(3, 2, 3), torch.ones(2, 3, dtype=torch.int64))
    large = (torch.full((3, 4, 2), 2.0), torch.full((4, 2), 2, dtype=torch.int64))
    images, targets = collate([small, large])
    assert images.shape == (2, 3, 4, 3) and targets.shape == (2, 4, 3) and targets.dtype == torch.int64
    assert targets[0, :2].eq(1).all() and targets[0, 2:].eq(255).all()
    assert targets[1, :, :2].eq(2).all() and targets[1, :, 2].eq(255).all()
    assert images[0, :, 2:].eq(0).all() and images[1, :, :, 2].eq(0).all()


# A default-config-like dataset: one token per word, maps at 8x8, images 24 x 32 (height x width).
MAP, IMAGE = 8, (24, 32)
FEATURES = Features(
    {
        "id": Value("string"),
        "image": Image(),
        "label": Image(),
        "tokens": List(Value("string")),
        "words": List({"word": Value("string"), "start": Value("int32"), "end": Value("int32")}),
        "token_maps": Array3D(shape=(None, MAP, MAP), dtype="float16"),
    }
)
PROMPTS = ["a cat on a mat", "a dog and a dog", "a red bicycle", "a cat and a dog", "a cat", "a mat"]


def quadrant(index: int) -> np.ndarray:
    """A map hot in one quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    hot = np.full((MAP, MAP), 0.1, np.float32)
    top, left = divmod(index % 4, 2)
    hot[top * MAP // 2 : (top + 1) * MAP // 2, left * MAP // 2 : (left + 1) * MAP // 2] = 1.0
    return hot


def make_rows(n: int = len(PROMPTS)) -> Dataset:
    """Rows whose k-th word's map is hot in quadrant k; the image's first pixel holds the row index."""
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for index in range(n):
        tokens = PROMPTS[index % len(PROMPTS)].split()
        image = np.zeros((*IMAGE, 3), np.uint8)
        image[..., 1] = np.arange(IMAGE[1], dtype=np.uint8)  # left-right asymmetric: flips show
        image[0, 0, 0] = index
        label = np.zeros(IMAGE, np.uint8)
        label[: IMAGE[0] // 2, : IMAGE[1] // 2] = 1 + index % 2
        columns["id"].append(f"row-{index}")
        columns["image"].append(PILImage.fromarray(image))
        columns["label"].append(PILImage.fromarray(label, mode="L"))
        columns["tokens"].append(tokens)
        columns["words"].append([{"word": t, "start": k, "end": k + 1} for k, t in enumerate(tokens)])
        columns["token_maps"].append(np.stack([quadrant(k) for k in range(len(tokens))]).astype(np.float16))
    return Dataset.from_dict(columns, features=FEATURES)


def row_index(image: torch.Tensor) -> int:
    return round(float(image[0, 0, 0]) * 255)


def test_label_items_shapes_and_values():
    rows = make_rows()
    data = segmentation_dataset(rows)
    assert isinstance(data, SegmentationDataset) and len(data) == len(rows)
    image, target = data[1]
    assert image.shape == (3, *IMAGE) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target.shape == IMAGE and target.dtype == torch.int64
    assert target[0, 0] == 2 and target[-1, -1] == 0 and set(target.unique().tolist()) == {0, 2}
    images, targets = next(iter(DataLoader(data, batch_size=4, collate_fn=collate)))
    assert images.shape == (4, 3, *IMAGE) and targets.shape == (4, *IMAGE)


def test_word_target_is_daams_mask_of_every_occurrence():
    rows = make_rows()
    data = segmentation_dataset(rows, target=("word", "dog"))
    by_index = {row_index(image): target for image, target in data}
    assert len(data) == 2 and sorted(by_index) == [1, 3]  # the rows without "dog" are skipped
    maps = torch.from_numpy(np.asarray(rows[1]["token_maps"], np.float32))
    torch.testing.assert_close(by_index[1], word_mask(maps[[1, 4]].mean(0), IMAGE, 0.4).long())
    half, margin = IMAGE[0] // 2, 2
    # "a dog and a dog": words 1 and 4 are hot top-right and top-left, so the mean is the top half
    assert by_index[1][: half - margin].eq(1).all() and by_index[1][half + margin :].eq(0).all()
    # "a cat and a dog": word 4, top-left only
    assert by_index[3][: half - margin, : IMAGE[1] // 2 - margin].eq(1).all()
    assert by_index[3][:, IMAGE[1] // 2 + margin :].eq(0).all()


def test_word_missing_ignore_keeps_rows_with_all_ignore_target():
    rows = make_rows()
    data = segmentation_dataset(rows, target=("word", "cat"), missing="ignore", threshold=0.5)
    assert len(data) == len(rows)
    assert all(data[k][1].eq(255).all() for k in (1, 2, 5))  # no "cat" in these prompts
    cat = data[0][1]  # "a cat on a mat": word 1, hot top-right
    assert cat[: IMAGE[0] // 2 - 2, IMAGE[1] // 2 + 2 :].eq(1).all() and cat[IMAGE[0] // 2 + 2 :].eq(0).all()
    assert len(segmentation_dataset(rows, target=("word", "cat"))) == 3


def test_streaming_matches_map_style_and_shards_over_workers():
    rows = make_rows(8)
    transform = segmentation_transforms((16, 16), train=True)
    indexed = segmentation_dataset(rows, transforms=transform, seed=3)
    streamed = segmentation_dataset(rows.to_iterable_dataset(num_shards=2), transforms=transform, seed=3)
    assert isinstance(streamed, IterableSegmentationDataset)
    for (image, target), (s_image, s_target) in zip([indexed[k] for k in range(8)], streamed, strict=True):
        torch.testing.assert_close(image, s_image)  # the same row gets the same flip: seeded by its id
        torch.testing.assert_close(target, s_target)
    plain = segmentation_dataset(rows.to_iterable_dataset(num_shards=2))
    loader = DataLoader(plain, batch_size=3, num_workers=2, collate_fn=collate)
    seen = sorted(row_index(image) for images, _ in loader for image in images)
    assert seen == list(range(8))  # each worker read its own shard: every row once
    words = segmentation_dataset(rows.to_iterable_dataset(), target=("word", "dog"))
    assert sorted(row_index(image) for image, _ in words) == [1, 3, 7]  # row 7 repeats prompt 1


def test_set_epoch_changes_augmentation():
    data = segmentation_dataset(make_rows(8), transforms=RandomHorizontalFlip())
    first = [data[k][0] for k in range(8)]
    data.set_epoch(1)
    second = [data[k][0] for k in range(8)]
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(a, data[k][0]) for k, a in enumerate(second))


def test_bad_targets_are_refused():
    rows = make_rows(2)
    with pytest.raises(ValueError, match="dataset has no column 'label'"):
        segmentation_dataset(rows.remove_columns("label"))
    with pytest.raises(ValueError, match="dataset has no column 'token_maps'"):
        segmentation_dataset(rows.remove_columns("token_maps"), target=("word", "cat"))
    with pytest.raises(ValueError, match="dataset has no column 'concepts', 'concept_maps'"):
        segmentation_dataset(rows, target=("concept", "cat"))
    with pytest.raises(ValueError, match="target must be a label column name,"):
        segmentation_dataset(rows, target=("phrase", "cat"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing must be 'skip' or 'ignore'"):
        segmentation_dataset(rows, target=("word", "cat"), missing="drop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one split"):
        segmentation_dataset({"train": rows})  # type: ignore[arg-type]


def test_concept_target_is_the_mask_of_the_concept_map():
    """``("concept", NAME)``: the τ-mask of NAME's ConceptAttention map (names case-insensitive);
    rows without the concept skipped, or all-ignore with ``missing="ignore"``."""
    rows = make_rows(4)
    concepts = [["cat", "mat"], ["dog"], ["Bicycle", "cat"], []]
    maps = [np.stack([quadrant(3 - k) for k in range(len(c))]).astype(np.float16) if c else np.zeros((0, MAP, MAP), np.float16)
            for c in concepts]
    rows = rows.add_column("concepts", concepts).add_column("concept_maps", [m.tolist() for m in maps])
    rows = rows.cast_column("concept_maps", Array3D(shape=(None, MAP, MAP), dtype="float16"))
    data = segmentation_dataset(rows, target=("concept", "CAT"))
    by_index = {row_index(image): target for image, target in data}
    assert sorted(by_index) == [0, 2]
    torch.testing.assert_close(by_index[0], word_mask(torch.from_numpy(quadrant(3)), IMAGE, 0.4).long())
    torch.testing.assert_close(by_index[2], word_mask(torch.from_numpy(quadrant(2)), IMAGE, 0.4).long())
    assert by_index[0][-1, -1] == 1 and by_index[0][0, 0] == 0  # quadrant 3: bottom-right
    kept = segmentation_dataset(rows, target=("concept", "bicycle"), missing="ignore")
    assert len(kept) == 4 and kept[1][1].eq(255).all() and kept[3][1].eq(255).all()
    streamed = segmentation_dataset(rows.to_iterable_dataset(), target=("concept", "dog"))
    assert [row_index(image) for image, _ in streamed] == [1]

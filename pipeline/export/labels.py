"""Label maps and images as the export layouts store them: checked, and encoded as each layout wants.

A label map is a single-channel PNG at image size: 0 background, 1..K the classes, 255 ignored.
``check_pair`` refuses any other value, size or a label that is not one channel; PNG bytes that
are already right are passed on as they are (no decode/encode round trip).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ExportError

IGNORE = 255
ONE_CHANNEL = ("L", "P", "I", "I;16", "1")  # label modes whose pixel values are class indices
JPEG_QUALITY = 95


def voc_palette() -> list[tuple[int, int, int]]:
    """The 256 colours of PASCAL VOC's label PNGs (bit-interleaved; 0 black, 255 ``(224, 224, 192)``)."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@dataclass
class CheckedPair:
    """A row's image and label map after ``check_pair``: the image's PNG bytes and mode, the
    label as an array and whether its PNG bytes are already a plain 8-bit grey PNG."""

    image: bytes
    image_is_rgb_png: bool
    label: np.ndarray
    label_png: bytes
    label_is_grey_png: bool

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.label.shape[1], self.label.shape[0]


def check_pair(row_id: str, image: bytes | None, label: bytes | None, num_classes: int) -> CheckedPair:
    """Decode and check a row's label map against its image (``ExportError`` names the row)."""
    where = f"row {row_id!r}"
    if not image or not label:
        raise ExportError(f"{where}: {'image' if not image else 'label'} has no bytes")
    try:
        picture = _open(image)
        mask = _open(label)
        if mask.mode not in ONE_CHANNEL:
            raise ExportError(f"{where}: label is a {mask.mode} image, expected one channel of class indices")
        array = np.asarray(mask)
    except (OSError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise ExportError(f"{where}: cannot read its image or label ({error})") from None
    if mask.size != picture.size:
        raise ExportError(f"{where}: label is {mask.size[0]}x{mask.size[1]}, its image {picture.size[0]}x{picture.size[1]}")
    values = np.unique(array)
    bad = values[(values > num_classes) & (values != IGNORE)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5])
        raise ExportError(f"{where}: label has values {shown} outside 0..{num_classes} and {IGNORE}")
    return CheckedPair(
        image=image,
        image_is_rgb_png=picture.format == "PNG" and picture.mode == "RGB",
        label=array.astype(np.uint8),
        label_png=label,
        label_is_grey_png=mask.format == "PNG" and mask.mode == "L",
    )


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def rgb_png(pair: CheckedPair) -> bytes:
    """The image as an RGB PNG (its own bytes when it is one)."""
    return pair.image if pair.image_is_rgb_png else _png(_open(pair.image).convert("RGB"))


def rgb_jpeg(pair: CheckedPair, quality: int = JPEG_QUALITY) -> bytes:
    """The image as an RGB JPEG."""
    buffer = io.BytesIO()
    _open(pair.image).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def grey_png(pair: CheckedPair) -> bytes:
    """The label as a single-channel 8-bit PNG of class indices (its own bytes when it is one)."""
    return pair.label_png if pair.label_is_grey_png else _png(Image.fromarray(pair.label))


def palette_png(pair: CheckedPair, palette: list[tuple[int, int, int]]) -> bytes:
    """The label as a palette ('P') PNG: pixel values are the class indices, ``palette`` their colours."""
    picture = Image.frombytes("P", pair.size, pair.label.tobytes())
    picture.putpalette([channel for colour in palette for channel in colour])
    return _png(picture)

"""Label maps of the export: the VOC colour map, the checks of a row's label against its image,
and the encodings (bytes kept when already right; palette PNGs keep the class indices)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ExportError
from pipeline.export.labels import check_pair, grey_png, palette_png, rgb_jpeg, rgb_png, voc_palette

K = 20


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(array)
    (picture.convert(mode) if mode else picture).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = png(np.zeros((6, 8, 3), np.uint8))
LABEL = np.array([[0, 1, 20, 255] * 2] * 6, np.uint8)


def test_voc_palette_is_the_standard_one():
    palette = voc_palette()
    assert len(palette) == 256 and palette[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert palette[15] == (192, 128, 128) and palette[20] == (0, 64, 128) and palette[255] == (224, 224, 192)


def test_a_right_pair_is_passed_on_as_it_is():
    label = png(LABEL)
    pair = check_pair("r", IMAGE, label, K)
    assert rgb_png(pair) is IMAGE and grey_png(pair) is label and pair.size == (8, 6)
    assert Image.open(io.BytesIO(rgb_jpeg(pair))).format == "JPEG"


def test_palette_png_keeps_the_indices():
    pair = check_pair("r", IMAGE, png(LABEL), K)
    picture = Image.open(io.BytesIO(palette_png(pair, voc_palette())))
    assert picture.mode == "P" and (np.asarray(picture) == LABEL).all()
    assert picture.getpalette()[3 * 255:3 * 256] == [224, 224, 192]


def test_other_encodings_are_converted():
    rgba = png(np.zeros((6, 8, 4), np.uint8))
    pair = check_pair("r", rgba, png(LABEL, "P"), K)
    assert Image.open(io.BytesIO(rgb_png(pair))).mode == "RGB"
    grey = Image.open(io.BytesIO(grey_png(pair)))
    assert grey.mode == "L" and (np.asarray(grey) == LABEL).all()


@pytest.mark.parametrize("image, label, message", [
    (IMAGE, png(np.full((6, 8), 21, np.uint8)), "row 'r': label has values 21 outside 0..20 and 255"),
    (IMAGE, png(np.zeros((5, 8), np.uint8)), "row 'r': label is 8x5, its image 8x6"),
    (IMAGE, png(np.zeros((6, 8, 3), np.uint8)), "row 'r': label is a RGB image, expected one channel of class indices"),
    (IMAGE, None, "row 'r': label has no bytes"),
    (None, png(LABEL), "row 'r': image has no bytes"),
    (IMAGE, b"not a png", "row 'r': cannot read its image or label"),
])
def test_bad_labels_are_refused_naming_the_row(image, label, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_pair("r", image, label, K)

"""``--layout voc``: the PASCAL VOC segmentation folder (what VOC readers and converters expect).

::

    JPEGImages/<stem>.jpg                       the images, JPEG (quality 95)
    SegmentationClass/<stem>.png                label maps as palette PNGs: pixel value = class index
                                                (0 background, 1..K, 255 ignore), VOC colour map
                                                (255 drawn (224, 224, 192))
    ImageSets/Segmentation/{train,val,trainval}.txt   stems of each split, one a line
    labels.txt                                  class names, one a line: line i is label i
    ids.jsonl                                   {"stem", "id", "split"}: file stem -> row id
    README.md
"""

from __future__ import annotations

from .base import IDS_FILE, README, FileLayout
from .labels import CheckedPair, palette_png, rgb_jpeg, voc_palette
from .plan import PlannedRow
from .splits import TRAIN, VALIDATION

LABELS_FILE = "labels.txt"
SETS = "ImageSets/Segmentation"

README_TEXT = """# DAAM segmentation export (PASCAL VOC layout)

Exported by `daam-datasets export {output} --layout voc`: {rows} rows ({summary}).
`SegmentationClass/*.png` are palette PNGs whose pixel values are class indices (0 background,
1..{k} the classes below, 255 ignored: uncertain pixels, drawn in VOC's border colour); read them
with `numpy.asarray(PIL.Image.open(path))`. `{labels}` lists the class names (line i = label i).
The class indices are this export's own, not VOC's 21 classes unless the run used `--classes voc`.
File stems are the row ids, or, for ids that are not safe file names, a readable part and a hash
(`{ids}` maps every stem to its id).

{table}
"""


class VocLayout(FileLayout):
    """``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``, ``labels.txt``."""

    name = "voc"

    def image_path(self, planned: PlannedRow) -> str:
        return f"JPEGImages/{planned.stem}.jpg"

    def label_path(self, planned: PlannedRow) -> str:
        return f"SegmentationClass/{planned.stem}.png"

    def encode(self, pair: CheckedPair) -> tuple[bytes, bytes]:
        return rgb_jpeg(pair), palette_png(pair, voc_palette())

    def split_lists(self) -> dict[str, list[PlannedRow]]:
        train, val = self.plan.in_split(TRAIN), self.plan.in_split(VALIDATION)
        both = sorted(train + val, key=lambda row: row.stem)
        return {f"{SETS}/train.txt": train, f"{SETS}/val.txt": val, f"{SETS}/trainval.txt": both}

    def extra_files(self) -> dict[str, str]:
        readme = README_TEXT.format(
            output=self.source.output, rows=len(self.plan.rows), summary=self.summary(), k=len(self.names) - 1,
            labels=LABELS_FILE, ids=IDS_FILE, table=self.class_table(palette=True),
        )
        return {LABELS_FILE: "".join(f"{name}\n" for name in self.names), README: readme}

"""``--layout mmseg``: the folder MMSegmentation's ``BaseSegDataset`` reads.

::

    img_dir/{train,val}/<stem>.png    the images (the output's own RGB PNG bytes)
    ann_dir/{train,val}/<stem>.png    label maps: one channel, 0 background, 1..K classes, 255 ignore
    splits/{train,val}.txt            stems of each split, one a line (the ann_file of a split)
    classes.json                      {"classes": [background, …], "palette": [[r, g, b], …]} (metainfo)
    ids.jsonl                         {"stem", "id", "split"}: file stem -> row id
    README.md                         the config to read it (reduce_zero_label=False, ignore_index=255)
"""

from __future__ import annotations

import json

from .base import IDS_FILE, README, FileLayout
from .labels import CheckedPair, grey_png, rgb_png, voc_palette
from .plan import PlannedRow
from .splits import SPLITS

CLASSES_FILE = "classes.json"
SUFFIX = ".png"

README_TEXT = """# DAAM segmentation export (MMSegmentation layout)

Exported by `daam-datasets export {output} --layout mmseg`: {rows} rows ({summary}).
Images are RGB PNGs, label maps single-channel PNGs of class indices: 0 background, 1..{k} the
classes below, 255 ignored (uncertain pixels). Label 0 is a real class: keep
`reduce_zero_label=False`. File stems are the row ids, or, for ids that are not safe file names,
a readable part and a hash (`{ids}` maps every stem to its id).

{table}

MMSegmentation 1.x:

```python
metainfo = dict(classes={classes}, palette={palette})
train_dataloader = dict(dataset=dict(
    type="BaseSegDataset", data_root="{root}", metainfo=metainfo,
    data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"),
    ann_file="splits/train.txt", img_suffix="{suffix}", seg_map_suffix="{suffix}",
    reduce_zero_label=False, ignore_index=255,
    pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]))
# validation: img_dir/val, ann_dir/val, splits/val.txt
```

`{classes_file}` holds the same class names and palette (the PASCAL VOC colours).
"""


class MmsegLayout(FileLayout):
    """``img_dir``/``ann_dir`` per split, split lists, ``classes.json``."""

    name = "mmseg"

    def image_path(self, planned: PlannedRow) -> str:
        return f"img_dir/{self.split_names[planned.split]}/{planned.stem}{SUFFIX}"

    def label_path(self, planned: PlannedRow) -> str:
        return f"ann_dir/{self.split_names[planned.split]}/{planned.stem}{SUFFIX}"

    def encode(self, pair: CheckedPair) -> tuple[bytes, bytes]:
        return rgb_png(pair), grey_png(pair)

    def split_lists(self) -> dict[str, list[PlannedRow]]:
        return {f"splits/{self.split_names[split]}.txt": self.plan.in_split(split) for split in SPLITS}

    def palette(self) -> list[list[int]]:
        """A colour per label (the VOC colours)."""
        return [list(colour) for colour in voc_palette()[: len(self.names)]]

    def extra_files(self) -> dict[str, str]:
        metainfo = {"classes": self.names, "palette": self.palette()}
        readme = README_TEXT.format(
            output=self.source.output, rows=len(self.plan.rows), summary=self.summary(), k=len(self.names) - 1,
            ids=IDS_FILE, table=self.class_table(palette=True), classes=tuple(self.names), palette=self.palette(),
            root=self.dest.layout.root, suffix=SUFFIX, classes_file=CLASSES_FILE,
        )
        return {CLASSES_FILE: json.dumps(metainfo, indent=2, ensure_ascii=False) + "\n", README: readme}

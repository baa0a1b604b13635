"""The record format: one ``datasets.Features`` from which Arrow schema, card YAML and WebDataset
fields are derived. Bump ``SCHEMA_VERSION`` whenever a column changes."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Array3D, Features, Image, List, Value
from datasets.arrow_writer import TypedSequence

from .maps import (  # noqa: F401  (decoders re-exported: schemas.record is where readers look)
    MAP_DTYPES,
    QUANTISED,
    SCALE_COLUMNS,
    decode_timestep_maps,
    decode_token_maps,
    stored_map_size,
    token_maps_column,
)

# 1.1: the optional segmentation columns (classes, class_maps, label); 1.2: timestep_maps;
# 1.3: overlay and overlay_words, uint8 maps with their *_map_scale columns, maps at --map-size;
# 1.4: the optional ConceptAttention columns (concepts, concept_maps)
SCHEMA_VERSION = "1.4.0"
WDS_IMAGE, WDS_META, WDS_MAPS = "png", "json", "maps.npy"
WDS_EXTENSIONS = (WDS_IMAGE, WDS_META, WDS_MAPS)
WDS_LABEL, WDS_CLASS_MAPS = "label.png", "class_maps.npy"  # with classes; ``classes`` goes in the json
WDS_TIMESTEP_MAPS = "timestep_maps.npy"  # with --per-timestep: (K, len(tokens), h, w)
SEGMENTATION_COLUMNS = ("classes", "class_maps", "label")
TIMESTEP_COLUMN = "timestep_maps"
CONCEPT_COLUMNS = ("concepts", "concept_maps")
WDS_CONCEPT_MAPS = "concept_maps.npy"  # with --concept-maps: (len(concepts), h, w); ``concepts`` goes in the json
OVERLAY_COLUMNS = ("overlay", "overlay_words")
WDS_OVERLAY = "overlay.jpg"  # with the overlay; ``overlay_words`` and uint8 maps' scales go in the json

COLUMN_DOCS = {
    "id": "stable row id: the corpus id (suffixed -k for image k > 0) or a hash of prompt and seed",
    "prompt_id": "id of the prompt this image was generated from",
    "prompt": "the prompt as given",
    "negative_prompt": "negative prompt used for classifier-free guidance ('' if none)",
    "seed": "seed of this image's CPU torch.Generator",
    "image_index": "k-th image of the prompt (0-based)",
    "image": "generated image (PNG)",
    "overlay": "the image (at most 256 px a side, JPEG) with the maps of `overlay_words` composited: each word's "
    "DAAM mask (τ = 0.4) tinted red, green, blue in that order, by the word's min-max heat, and outlined",
    "overlay_words": "the words drawn in `overlay` (up to 3 content words, most peaked map first: peak / mean)",
    "tokens": "the prompt's tokens (decoded text), without start/end tokens",
    "token_ids": "tokenizer ids of `tokens`",
    "token_maps": "DAAM map per token: row i belongs to tokens[i]; (len(tokens), h, w) at the map grid (or "
    "--map-size), raw; uint8 maps are codes: value = code * token_map_scale[i] / 255",
    "token_map_scale": "with --map-dtype uint8: per token the maximum of its map (the scale of its codes)",
    "timestep_map_scale": "with --map-dtype uint8: per time bin and token the scale of its `timestep_maps` codes",
    "class_map_scale": "with --map-dtype uint8: per class the scale of its `class_maps` codes",
    "concept_map_scale": "with --map-dtype uint8: per concept the scale of its `concept_maps` codes",
    "concepts": "with --concept-maps: the concepts of `concept_maps` (the prompt's content words, its matched "
    "classes or the run's --concepts)",
    "concept_maps": "with --concept-maps: ConceptAttention map per concept, (len(concepts), h, w) like `token_maps`: "
    "softmax over the concepts of concept·image attention outputs, mean over the selected blocks and steps "
    "(each pixel's values sum to 1)",
    "words": "words of the prompt with their token span [start, end)",
    "truncated": "true if the prompt had more tokens than the text encoder's window",
    "timestep_maps": "with --per-timestep K: K maps like `token_maps`, one per contiguous bin of the traced steps "
    "(bin k aggregated over its steps only; bins in run.json's trace.timestep_bins), (K, len(tokens), h, w), raw",
    "classes": "classes the prompt names (with --classes): label, name, token spans of every mention, "
    "and filter statistics peak, area, ignore_fraction, agreement (see docs/segmentation.md)",
    "class_maps": "one map per entry of `classes`, (len(classes), h, w) like `token_maps`: the (refined) "
    "class map the label rule thresholds",
    "label": "class label map at image size (single-channel PNG): 0 background, i = class i, 255 ignore",
}

CLASS_FEATURE = {
    "label": Value("int32"),
    "name": Value("string"),
    "spans": List({"start": Value("int32"), "end": Value("int32")}),
    "peak": Value("float32"),
    "area": Value("float32"),
    "ignore_fraction": Value("float32"),
    "agreement": Value("float32"),
}


def build_features(
    map_height: int,
    map_width: int,
    map_dtype: str = "float16",
    segmentation: bool = False,
    timestep_bins: int | None = None,
    overlay: bool = False,
    concepts: bool = False,
) -> Features:
    """The dataset's features for maps of ``(None, map_height, map_width)`` in ``map_dtype`` (uint8
    maps come with their ``*_map_scale`` columns, ``schemas.maps``); with ``overlay`` also
    ``overlay`` and ``overlay_words``; with ``timestep_bins`` ``K`` (``--per-timestep``) also
    ``timestep_maps``, a list of ``K`` such maps; with ``segmentation`` (a run with classes) also
    ``classes``, ``class_maps`` and ``label``; with ``concepts`` (``--concept-maps``) also
    ``concepts`` and ``concept_maps``."""
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map dtype must be one of {MAP_DTYPES}, got {map_dtype!r}")
    quantised = map_dtype == QUANTISED
    maps = Array3D(shape=(None, map_height, map_width), dtype=map_dtype)
    scales = List(Value("float32"))
    columns: dict[str, Any] = {
        "id": Value("string"),
        "prompt_id": Value("string"),
        "prompt": Value("string"),
        "negative_prompt": Value("string"),
        "seed": Value("int64"),
        "image_index": Value("int32"),
        "image": Image(),
    }
    if overlay:
        columns["overlay"] = Image()
        columns["overlay_words"] = List(Value("string"))
    columns["tokens"] = List(Value("string"))
    columns["token_ids"] = List(Value("int32"))
    columns["token_maps"] = maps
    if quantised:
        columns[SCALE_COLUMNS["token_maps"]] = scales
    columns["words"] = List({"word": Value("string"), "start": Value("int32"), "end": Value("int32")})
    columns["truncated"] = Value("bool")
    if timestep_bins is not None:
        columns[TIMESTEP_COLUMN] = List(maps, length=timestep_bins)
        if quantised:
            columns[SCALE_COLUMNS[TIMESTEP_COLUMN]] = List(scales, length=timestep_bins)
    if concepts:
        columns["concepts"] = List(Value("string"))
        columns["concept_maps"] = maps
        if quantised:
            columns[SCALE_COLUMNS["concept_maps"]] = scales
    if segmentation:
        columns["classes"] = List(CLASS_FEATURE)
        columns["class_maps"] = maps
        if quantised:
            columns[SCALE_COLUMNS["class_maps"]] = scales
        columns["label"] = Image()
    return Features(columns)


def run_features(settings: dict[str, Any], map_size: Any) -> Features:
    """The features of a run from its recorded settings (``run.json``'s ``settings``: map dtype
    and size, overlay, classes, ``--per-timestep``) and its map grid (``run.json``'s
    ``map_size``); settings recorded before an option existed read as its earlier behaviour."""
    trace = settings.get("generation", {}).get("trace", {})
    height, width = stored_map_size(map_size, settings.get("map_size"))
    return build_features(
        height, width, settings.get("map_dtype", "float16"), bool(settings.get("segmentation")),
        trace.get("per_timestep"), bool(settings.get("overlay", False)),
        settings.get("generation", {}).get("concepts") is not None,
    )


def segmentation_features() -> Features:
    """Features of the ``segmentation`` config: what semantic-segmentation trainers read."""
    return Features(
        {
            "id": Value("string"),
            "prompt": Value("string"),
            "image": Image(),
            "label": Image(),
            "classes": List(Value("string")),
        }
    )


@dataclass
class Record:
    """One row: an image, its prompt and its per-token maps."""

    id: str
    prompt_id: str
    prompt: str
    negative_prompt: str
    seed: int
    image_index: int
    png: bytes
    tokens: list[str]
    token_ids: list[int]
    token_maps: np.ndarray
    words: list[dict[str, Any]]
    truncated: bool
    classes: list[dict[str, Any]] | None = None  # with --classes: one ``CLASS_FEATURE`` dict per class
    class_maps: np.ndarray | None = None
    label_png: bytes | None = None
    timestep_maps: np.ndarray | None = None  # with --per-timestep: (K, len(tokens), h, w)
    overlay_jpeg: bytes | None = None  # with the overlay: JPEG of the image with its strongest words' maps
    overlay_words: list[str] | None = None
    token_map_scale: np.ndarray | None = None  # uint8 maps: one scale per map (schemas.maps)
    timestep_map_scale: np.ndarray | None = None
    class_map_scale: np.ndarray | None = None
    concepts: list[str] | None = None  # with --concept-maps: the concept names ...
    concept_maps: np.ndarray | None = None  # ... and their maps (len(concepts), h, w)
    concept_map_scale: np.ndarray | None = None

    @property
    def segmented(self) -> bool:
        """Whether the row carries segmentation columns (a run with classes)."""
        return self.classes is not None

    def metadata(self) -> dict[str, Any]:
        """Everything but the images and maps (the WebDataset ``.json`` member; with uint8 maps their
        scales, as lists)."""
        meta = {
            "id": self.id,
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "image_index": self.image_index,
            "tokens": self.tokens,
            "token_ids": self.token_ids,
            "words": self.words,
            "truncated": self.truncated,
            "schema_version": SCHEMA_VERSION,
        }
        if self.segmented:
            meta["classes"] = self.classes
        if self.overlay_words is not None:
            meta["overlay_words"] = self.overlay_words
        if self.concepts is not None:
            meta["concepts"] = self.concepts
        for scale in SCALE_COLUMNS.values():
            if getattr(self, scale) is not None:
                meta[scale] = getattr(self, scale).tolist()
        return meta


def encode_png(image: np.ndarray) -> bytes:
    """Encode an 8-bit ``(H, W, 3)`` (RGB) or ``(H, W)`` (single-channel) array as PNG
    (deterministic bytes)."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


_IMAGE_ATTRIBUTES = {"image": "png", "label": "label_png", "overlay": "overlay_jpeg"}
_SCALES = frozenset(SCALE_COLUMNS.values())


def _cell(record: Record, name: str) -> Any:
    if name in _IMAGE_ATTRIBUTES:
        return {"bytes": getattr(record, _IMAGE_ATTRIBUTES[name]), "path": None}
    if name == TIMESTEP_COLUMN:
        return None if record.timestep_maps is None else list(record.timestep_maps)  # K Array3D cells
    if name in _SCALES:
        scale = getattr(record, name)
        return None if scale is None else scale.tolist()
    return getattr(record, name)


def _table(rows: list[dict[str, Any]], features: Features) -> pa.Table:
    arrays = [pa.array(TypedSequence([row[name] for row in rows], type=feature)) for name, feature in features.items()]
    return pa.Table.from_arrays(arrays, schema=features.arrow_schema)


def records_to_table(records: list[Record], features: Features) -> pa.Table:
    """Encode records as an Arrow table whose schema carries the HF features metadata."""
    return _table([{name: _cell(record, name) for name in features} for record in records], features)


def segmentation_rows(records: list[Record]) -> list[Record]:
    """The records that belong in the ``segmentation`` config: those whose prompt names a class."""
    return [r for r in records if r.classes]


def segmentation_table(records: list[Record]) -> pa.Table:
    """The ``segmentation`` config's table of ``segmentation_rows(records)``."""
    rows = [
        {
            "id": r.id,
            "prompt": r.prompt,
            "image": {"bytes": r.png, "path": None},
            "label": {"bytes": r.label_png, "path": None},
            "classes": [c["name"] for c in r.classes or []],
        }
        for r in segmentation_rows(records)
    ]
    return _table(rows, segmentation_features())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def wds_sample(key: str, record: Record) -> dict[str, Any]:
    """A WebDataset sample dict (same extensions in every sample of a run)."""
    sample = {
        "__key__": key,
        WDS_IMAGE: record.png,
        WDS_META: json.dumps(record.metadata(), ensure_ascii=False, sort_keys=True).encode("utf-8"),
        WDS_MAPS: _npy(record.token_maps),
    }
    if record.overlay_jpeg is not None:
        sample[WDS_OVERLAY] = record.overlay_jpeg
    if record.timestep_maps is not None:
        sample[WDS_TIMESTEP_MAPS] = _npy(record.timestep_maps)
    if record.concept_maps is not None:
        sample[WDS_CONCEPT_MAPS] = _npy(record.concept_maps)
    if record.segmented:
        sample[WDS_LABEL] = record.label_png
        sample[WDS_CLASS_MAPS] = _npy(record.class_maps)
    return sample

"""How maps are stored and read back: dtypes, the stored grid (``--map-size``), uint8
quantisation with per-map scales (``--map-dtype uint8``) and the one decoding every reader uses.

A map column (``token_maps``, ``timestep_maps``, ``class_maps``, ``concept_maps``) holds float16/float32 values as
they are, or uint8 codes ``q``. With uint8 each map (one token's ``(h, w)`` map; one per time bin
and token; one per class) has its own scale in the column ``SCALE_COLUMNS[column]``:

    q = round(255 · x / scale)   with scale = the map's maximum (q = 0 where scale = 0)
    x̂ = q · (scale / 255)        in float32

so ``|x − x̂| ≤ scale / 510`` (half a step: within 1/255 of the map's own maximum), and every
map with a positive maximum has ``q = 255`` at its peak. ``decode_maps`` and ``row_maps`` are
the only places that apply the scale; everything that reads maps goes through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

FLOAT_DTYPES = ("float16", "float32")
QUANTISED = "uint8"
MAP_DTYPES = (*FLOAT_DTYPES, QUANTISED)
LEVELS = 255  # the largest uint8 code: a map's maximum
MAP_COLUMNS = ("token_maps", "timestep_maps", "class_maps", "concept_maps")
SCALE_COLUMNS = {
    "token_maps": "token_map_scale", "timestep_maps": "timestep_map_scale", "class_maps": "class_map_scale",
    "concept_maps": "concept_map_scale",
}


def stored_map_size(grid: Sequence[int], map_size: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of stored maps for a model's map ``grid`` and ``--map-size S``: the
    grid itself without ``S``; else the grid scaled so its longer side is ``S``, the shorter side
    rounded half up (aspect ratio kept; a square grid gives ``S×S``)."""
    height, width = int(grid[0]), int(grid[1])
    if map_size is None:
        return height, width
    side = int(map_size)
    if height >= width:
        return side, max(1, (2 * side * width + height) // (2 * height))
    return max(1, (2 * side * height + width) // (2 * width)), side


def check_map_size(grid: Sequence[int], map_size: int | None) -> None:
    """``ValueError`` (one line) for a ``--map-size`` larger than the model's map grid: stored maps
    are only made smaller, since a reader gets any larger size from the same bicubic resize."""
    if map_size is not None and map_size > max(grid):
        raise ValueError(
            f"--map-size {map_size} is larger than this model's map grid {grid[1]}x{grid[0]} at this image "
            f"size: maps are only stored smaller (resize them when reading); use at most {max(grid)}"
        )


def quantize_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes and float32 scales (``maps.shape[:-2]``) of maps ``(..., h, w)`` (see the
    module docstring); negative values (none in stored maps) code as 0."""
    values = np.asarray(maps, dtype=np.float32)
    scale = np.maximum(values.max(axis=(-2, -1)), 0.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))[..., None, None]
    codes = np.rint(np.clip(values, 0.0, None) / safe * np.float32(LEVELS))
    return np.clip(codes, 0, LEVELS).astype(np.uint8), scale


def encode_maps(maps: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Maps as stored in ``dtype`` and their scales (``None`` for a float dtype, whose values are
    cast as they are)."""
    if dtype == QUANTISED:
        return quantize_maps(maps)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"map dtype must be one of {MAP_DTYPES}, got {dtype!r}")
    return np.asarray(maps).astype(dtype), None


def decode_maps(values: Any, scale: Any = None) -> np.ndarray:
    """Stored maps ``(..., h, w)`` as float32: uint8 codes times ``scale / 255`` when ``scale``
    (one per map, ``values.shape[:-2]``) is given, else the values as they are."""
    maps = np.asarray(values, dtype=np.float32)
    if scale is None or maps.size == 0:
        return maps
    scales = np.asarray(scale, dtype=np.float32)
    if scales.shape != maps.shape[:-2]:
        raise ValueError(f"{scales.shape} scales for maps of shape {maps.shape}: one scale per map expected")
    return maps * (scales / np.float32(LEVELS))[..., None, None]


def row_maps(row: Mapping[str, Any], column: str = "token_maps") -> np.ndarray:
    """A row's maps of ``column`` as float32 (dequantised when the row has the column's scale):
    a ``load_dataset`` row (lists or arrays), a WebDataset sample's metadata with the maps added,
    or a row of ``decoded_row``."""
    return decode_maps(row[column], row.get(SCALE_COLUMNS[column]))


def decoded_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` with every map column as float32 and no scale columns (decoded once:
    ``row_maps`` of the copy gives the same maps)."""
    decoded = dict(row)
    for column, scale in SCALE_COLUMNS.items():
        if column in decoded and decoded[column] is not None:
            decoded[column] = row_maps(row, column)
        decoded.pop(scale, None)
    return decoded


# -- Arrow cells (the validator and the preview read Parquet batches without datasets' decoding) --
def decode_token_maps(cell: Any, empty_shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One ``token_maps`` cell of an Arrow column (``list<list<list<x>>>``, or its Array3D
    extension) as an ``(n, h, w)`` array in the stored dtype (codes for uint8: ``decode_maps``
    applies the scale); ``ValueError`` names what is wrong (null cell, ragged rows, null values)."""
    if isinstance(cell, pa.ExtensionScalar):
        cell = cell.value
    if cell is None or not cell.is_valid:
        raise ValueError("token_maps is null")
    tokens = cell.values  # list<list<x>>: one entry per token
    n = len(tokens)
    if n == 0:
        return np.zeros((0, *empty_shape), dtype=tokens.type.value_type.value_type.to_pandas_dtype())
    rows = tokens.flatten()
    heights = np.asarray(tokens.value_lengths())
    widths = np.asarray(rows.value_lengths())
    if (heights != heights[0]).any() or (widths != widths[0]).any():
        raise ValueError("ragged map rows")
    values = rows.flatten()
    if values.null_count:
        raise ValueError("maps contain nulls")
    return values.to_numpy(zero_copy_only=False).reshape(n, int(heights[0]), int(widths[0]))


def decode_timestep_maps(cell: Any, empty_shape: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One ``timestep_maps`` cell (a list of ``K`` ``token_maps``-like cells) as a ``(K, n, h, w)``
    array in the stored dtype; ``ValueError`` names what is wrong."""
    if cell is None or not cell.is_valid:
        raise ValueError("timestep_maps is null")
    bins = cell.values
    maps = [decode_token_maps(bins[k], empty_shape) for k in range(len(bins))]
    if len({m.shape for m in maps}) > 1:
        raise ValueError(f"time bins of different shapes {sorted({m.shape for m in maps})}")
    return np.stack(maps) if maps else np.zeros((0, 0, *empty_shape), dtype=np.float32)


def token_maps_column(column: Any) -> Any:
    """The plain nested-list storage of a ``token_maps`` column (Array3D is an extension type)."""
    return column.storage if isinstance(column.type, pa.ExtensionType) else column

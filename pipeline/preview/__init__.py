"""The static HTML gallery of an output (``daam-datasets preview``) and the card's grid image.

``rows`` reads the first rows back (``datasets`` for Parquet, ``webdataset`` for tar shards),
``images`` renders the JPEG overlays and ``grid.png``, ``page`` the Jinja2 page from
``templates/`` and ``static/``, and ``gallery`` writes ``OUTPUT/preview/`` (``write_preview``).
"""

from .gallery import DEFAULT_GRID, DEFAULT_SAMPLES, DEFAULT_SIZE, PreviewResult, write_preview
from .images import grid_word, render_grid, require_matplotlib
from .page import render_page
from .rows import parquet_rows, read_rows, webdataset_rows

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_SAMPLES",
    "DEFAULT_SIZE",
    "PreviewResult",
    "grid_word",
    "parquet_rows",
    "read_rows",
    "render_grid",
    "render_page",
    "require_matplotlib",
    "webdataset_rows",
    "write_preview",
]

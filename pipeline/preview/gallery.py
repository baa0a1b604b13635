"""``daam-datasets preview OUTPUT``: a static HTML gallery of an output and the card's grid image.

Writes ``OUTPUT/preview/``: ``index.html`` (self-contained: inline CSS and script, no server, no
CDN), ``assets/NNN/image.jpg`` (image NNN, scaled to ``--size``), ``assets/NNN/wKK.jpg`` (word K's
overlay: DAAM's jet overlay with the τ mask outlined; a folder per sample keeps folders far below
the Hub's 10,000 files) and ``grid.png`` (a few samples with one word each), which the dataset card
embeds. ``preview/`` lies outside every data pattern, so ``load_dataset(OUTPUT)`` reads the same
rows as before.

In the gallery, hover or focus a word to see its heat map, click to pin it; ``index.html?word=K``
(index, or a word's text) selects word K in every sample, ``?sample=I&word=K`` in sample I only.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import logging
import os
import posixpath
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from transforms.layout import CARD_FILE, DATA_DIR, RUN_FILE, WDS_DIR, OutputLayout

from ..card import PREVIEW_GALLERY, PREVIEW_IMAGE, embed_preview

logger = logging.getLogger(__name__)

PREVIEW_DIR = posixpath.dirname(PREVIEW_IMAGE)
ASSETS = "assets"
DEFAULT_SAMPLES = 48
DEFAULT_SIZE = 256
DEFAULT_GRID = 8
JPEG_QUALITY = 88
# words not worth showing on the card's grid (the gallery shows every word)
_GRID_SKIP = frozenset(
    ["a", "an", "the", "of", "on", "in", "at", "to", "with", "and", "or", "for", "from", "by", "into", "onto", "over", "under", "next", "near", "its", "his", "her", "their", "is", "are", "was", "were", "be", "this", "that", "these", "those", "some", "two", "three", "very"]
)


class PreviewError(RuntimeError):
    """The preview cannot be made; the message is for the user as is."""


@dataclass
class PreviewResult:
    """What ``write_preview`` wrote: the gallery path, samples, overlay images and the grid."""

    index: str
    samples: int
    overlays: int
    grid: str
    card_updated: bool


# -- reading rows ----------------------------------------------------------------------------------
def _maps_from_cell(cell: Any) -> np.ndarray:
    """An Array3D cell (``list<list<list<x>>>``) as a float32 array ``(n, h, w)``."""
    per_token = cell.values
    n = len(per_token)
    if n == 0:
        return np.zeros((0, 0, 0), dtype=np.float32)
    rows = per_token.flatten()
    values = rows.flatten().to_numpy(zero_copy_only=False)
    h = len(rows) // n
    return values.reshape(n, h, len(values) // (n * h)).astype(np.float32)


def _parquet_rows(layout: OutputLayout) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["id", "prompt", "seed", "image", "tokens", "token_maps", "words", "truncated"]
    for path in layout.list(DATA_DIR, ".parquet"):
        with layout.fs.open(path, "rb") as fh:
            parquet = pq.ParquetFile(fh)
            for batch in parquet.iter_batches(batch_size=16, columns=columns):
                maps = batch.column("token_maps")
                if isinstance(maps.type, pa.ExtensionType):
                    maps = maps.storage
                plain = batch.drop_columns(["token_maps"]).to_pylist()
                for i, row in enumerate(plain):
                    row["token_maps"] = _maps_from_cell(maps[i])
                    yield row


def _webdataset_rows(layout: OutputLayout) -> Iterator[dict[str, Any]]:
    from schemas.record import WDS_IMAGE, WDS_MAPS, WDS_META

    for path in layout.list(WDS_DIR, ".tar"):
        with layout.fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            sample: dict[str, bytes] = {}
            key = None
            for member in tar:
                if not member.isfile():
                    continue
                name_key, _, ext = member.name.partition(".")
                if key is not None and name_key != key:
                    yield _wds_row(sample, WDS_IMAGE, WDS_META, WDS_MAPS)
                    sample = {}
                key = name_key
                sample[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
            if sample:
                yield _wds_row(sample, WDS_IMAGE, WDS_META, WDS_MAPS)


def _wds_row(sample: dict[str, bytes], image: str, meta: str, maps: str) -> dict[str, Any]:
    row = json.loads(sample[meta].decode("utf-8"))
    row["image"] = {"bytes": sample[image], "path": None}
    row["token_maps"] = np.load(io.BytesIO(sample[maps]), allow_pickle=False).astype(np.float32)
    return row


def read_rows(output: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of an output (shard order), from Parquet or else WebDataset shards."""
    layout = OutputLayout(output)
    if not layout.exists(layout.base):
        raise PreviewError(f"{output}: no such folder")
    source = _parquet_rows(layout) if layout.list(DATA_DIR, ".parquet") else _webdataset_rows(layout)
    rows = []
    for row in source:
        rows.append(row)
        if len(rows) >= n:
            break
    if not rows:
        raise PreviewError(f"{output}: no data shards (data/*.parquet or wds/*.tar) with rows to preview")
    return rows


# -- images ----------------------------------------------------------------------------------------
def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def grid_word(row: dict[str, Any]) -> int:
    """Index of the word shown on the grid: the content word whose map is most peaked."""
    from transforms.attribution.overlay import row_maps, spans_map

    maps = row_maps(row)
    best, best_score = 0, -1.0
    for k, entry in enumerate(row["words"]):
        text = str(entry["word"]).lower()
        if not text.isalpha() or text in _GRID_SKIP:
            continue
        latent = spans_map(maps, [(int(entry["start"]), int(entry["end"]))])
        score = float(latent.max() / (latent.mean() + 1e-8))
        if score > best_score:
            best, best_score = k, score
    return best


def render_grid(tiles: list[tuple[Any, str, str]], columns: int = 4) -> bytes:
    """PNG of overlay tiles ``(image, word, prompt)`` in a grid, titled with the word and prompt."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    figure = Figure(figsize=(2.6 * columns, 3.1 * rows), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    for i, (image, word, prompt) in enumerate(tiles):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(np.asarray(image))
        ax.set_axis_off()
        text = textwrap.shorten(prompt, 90, placeholder=" …")
        ax.set_title(f"“{word}”\n" + "\n".join(textwrap.wrap(text, 38)[:2]), fontsize=7.5, loc="left")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.06, hspace=0.35)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# -- HTML ------------------------------------------------------------------------------------------
def _prompt_html(prompt: str, words: list[dict[str, Any]], buttons: list[str], truncated: bool) -> str:
    """The prompt with each word replaced by its button (in place when the words align with the
    prompt text, else the buttons in order)."""
    lower = prompt.lower()
    parts: list[str] = []
    cursor = 0
    aligned = len(lower) == len(prompt)
    if aligned:
        for entry, button in zip(words, buttons):
            text = str(entry["word"]).lower()
            at = lower.find(text, cursor) if text else -1
            if at < 0 or lower[cursor:at].strip():
                aligned = False
                break
            parts.append(html.escape(prompt[cursor:at]))
            parts.append(button.replace("\x00", html.escape(prompt[at : at + len(text)])))
            cursor = at + len(text)
    if aligned:
        rest = prompt[cursor:]
        if rest.strip():
            parts.append(f'<span class="cut" title="beyond the text encoder window">{html.escape(rest)}</span>')
        else:
            parts.append(html.escape(rest))
        return "".join(parts)
    items = [b.replace("\x00", html.escape(str(e["word"]))) for e, b in zip(words, buttons)]
    note = ' <span class="cut">(truncated)</span>' if truncated else ""
    return " ".join(items) + note


def _sample_html(i: int, row: dict[str, Any], base: str, overlays: list[str], size: tuple[int, int]) -> str:
    words = list(row["words"])
    tokens = [str(t) for t in row["tokens"]]
    buttons = [
        f'<button type="button" class="word" data-k="{k}" data-start="{int(w["start"])}" data-end="{int(w["end"])}" '
        f'data-overlay="{html.escape(overlays[k])}" aria-pressed="false">\x00</button>'
        for k, w in enumerate(words)
    ]
    token_items = "".join(f'<li data-t="{t}">{html.escape(tok) or "&nbsp;"}</li>' for t, tok in enumerate(tokens))
    prompt = _prompt_html(str(row["prompt"]), words, buttons, bool(row.get("truncated")))
    alt = html.escape(str(row["prompt"]), quote=True)
    width, height = size
    return f"""<figure class="sample" id="sample-{i}" data-index="{i}" data-id="{html.escape(str(row['id']))}">
  <div class="view" style="aspect-ratio: {width} / {height}">
    <img class="base" src="{base}" width="{width}" height="{height}" alt="{alt}">
    <img class="overlay" width="{width}" height="{height}" alt="" hidden>
  </div>
  <figcaption>
    <p class="prompt">{prompt}</p>
    <p class="status">hover or click a word</p>
    <ol class="tokens" start="0">{token_items}</ol>
    <p class="meta">id {html.escape(str(row['id']))} · seed {html.escape(str(row.get('seed', '')))}</p>
  </figcaption>
</figure>"""


STYLE = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #f6f7f9; --card: #fff; --muted: #667; --accent: #d43f1c; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --bg: #16181c; --card: #22252b; --muted: #99a; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 16px 20px 4px; }
header h1 { font-size: 20px; margin: 0 0 4px; }
header p { margin: 2px 0; color: var(--muted); max-width: 70em; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 14px; padding: 12px 20px 24px; }
figure.sample { margin: 0; background: var(--card); border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.15); overflow: hidden; }
.view { position: relative; width: 100%; background: #000; }
.view img { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
.view img[hidden] { display: none; }
figcaption { padding: 8px 10px 10px; }
.prompt { margin: 0 0 4px; font-size: 15px; }
button.word { font: inherit; color: inherit; background: none; border: 0; border-bottom: 2px dotted var(--muted); padding: 0 1px; margin: 0; cursor: pointer; border-radius: 3px; }
button.word:hover, button.word:focus-visible { background: rgba(212,63,28,.15); outline: none; }
button.word[aria-pressed="true"], button.word.active { background: var(--accent); color: #fff; border-bottom-color: var(--accent); }
.cut { color: var(--muted); text-decoration: line-through; }
.status { margin: 0 0 6px; color: var(--muted); font-size: 12px; height: 1.45em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
ol.tokens { list-style: none; padding: 0; margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 3px; }
ol.tokens li { font: 12px ui-monospace, Menlo, Consolas, monospace; padding: 1px 5px; border-radius: 4px; background: rgba(128,128,128,.16); }
ol.tokens li.on { background: var(--accent); color: #fff; }
.meta { margin: 0; color: var(--muted); font-size: 11px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var figures = Array.prototype.slice.call(document.querySelectorAll("figure.sample"));
  function show(fig, button) {
    var overlay = fig.querySelector("img.overlay");
    var status = fig.querySelector(".status");
    var tokens = fig.querySelectorAll("ol.tokens li");
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) { b.classList.toggle("active", b === button); });
    Array.prototype.forEach.call(tokens, function (li) { li.classList.remove("on"); });
    if (!button) {
      overlay.hidden = true;
      overlay.removeAttribute("src");
      fig.removeAttribute("data-word");
      status.textContent = "hover or click a word";
      status.removeAttribute("title");
      return;
    }
    var start = +button.dataset.start, end = +button.dataset.end;
    for (var t = start; t < end && t < tokens.length; t++) { tokens[t].classList.add("on"); }
    overlay.src = button.dataset.overlay;
    overlay.hidden = false;
    fig.setAttribute("data-word", button.dataset.k);
    var names = [];
    for (var u = start; u < end && u < tokens.length; u++) { names.push(tokens[u].textContent); }
    status.textContent = "\\u201c" + button.textContent + "\\u201d \\u00b7 token" + (end - start > 1 ? "s " : " ") +
      names.join(" + ") + " [" + start + (end - start > 1 ? "\\u2013" + (end - 1) : "") + "] \\u00b7 outline: mask at \\u03c4 = " +
      document.body.dataset.threshold;
    status.title = status.textContent;
  }
  function pin(fig, button) {
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) { b.setAttribute("aria-pressed", b === button ? "true" : "false"); });
    fig.pinned = button || null;
    show(fig, fig.pinned);
  }
  figures.forEach(function (fig) {
    fig.pinned = null;
    var overlay = fig.querySelector("img.overlay");
    overlay.addEventListener("load", function () { fig.setAttribute("data-loaded", overlay.getAttribute("src") || ""); });
    overlay.addEventListener("error", function () { fig.setAttribute("data-failed", overlay.getAttribute("src") || ""); });
    Array.prototype.forEach.call(fig.querySelectorAll("button.word"), function (b) {
      b.addEventListener("mouseenter", function () { show(fig, b); });
      b.addEventListener("focus", function () { show(fig, b); });
      b.addEventListener("mouseleave", function () { show(fig, fig.pinned); });
      b.addEventListener("blur", function () { show(fig, fig.pinned); });
      b.addEventListener("click", function () { pin(fig, fig.pinned === b ? null : b); });
    });
  });
  function find(fig, word) {
    var buttons = fig.querySelectorAll("button.word");
    if (/^-?\\d+$/.test(word)) { var k = +word; if (k < 0) { k += buttons.length; } return buttons[k] || null; }
    for (var i = 0; i < buttons.length; i++) { if (buttons[i].textContent.toLowerCase() === word.toLowerCase()) { return buttons[i]; } }
    return null;
  }
  var query = new URLSearchParams(window.location.search);
  var word = query.get("word");
  if (word !== null) {
    var only = query.get("sample");
    figures.forEach(function (fig) {
      if (only === null || fig.dataset.index === only) { var b = find(fig, word); if (b) { pin(fig, b); } }
    });
  }
})();
"""


def gallery_html(samples: list[str], header: str, threshold: float) -> str:
    """The whole ``index.html``."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DAAM preview — {len(samples)} samples</title>
<style>{STYLE}</style>
</head>
<body data-threshold="{threshold}">
<header>
<h1>DAAM attribution preview</h1>
{header}
</header>
<main id="gallery">
{chr(10).join(samples)}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _header(output: str, layout: OutputLayout, shown: int, threshold: float, cmap: str) -> str:
    facts = []
    if layout.exists(layout.path(RUN_FILE)):
        try:
            run = layout.read_json(layout.path(RUN_FILE))
            settings = run.get("settings", {})
            model = settings.get("model", {}).get("model")
            gen = settings.get("generation", {})
            facts.append(f"{shown} of {run.get('summary', {}).get('rows', '?')} images")
            if model:
                facts.append(f"model <code>{html.escape(str(model))}</code>")
            if gen:
                facts.append(f"{gen.get('steps')} steps, guidance {gen.get('guidance_scale')}")
            if run.get("map_size"):
                facts.append(f"maps {run['map_size'][1]}×{run['map_size'][0]}")
        except (OSError, ValueError, AttributeError):
            pass
    if not facts:
        facts.append(f"{shown} images")
    return (
        f"<p>{' · '.join(facts)}</p>\n"
        f"<p>Hover or click a word of a prompt to overlay its heat map (DAAM word map, colour map "
        f"<code>{html.escape(cmap)}</code>, resized to the image and min-max normalised); the outline "
        f"is its mask at τ = {threshold}. The highlighted tokens are the ones merged into the map. "
        f"Link to <code>?word=K</code> (index or text) to select a word in every sample.</p>"
    )


# -- writing ---------------------------------------------------------------------------------------
def write_preview(
    output: str,
    n: int = DEFAULT_SAMPLES,
    size: int = DEFAULT_SIZE,
    grid: int = DEFAULT_GRID,
    cmap: str = "jet",
    alpha: float = 1.0,
    threshold: float = 0.4,
    update_card: bool = True,
) -> PreviewResult:
    """Write ``OUTPUT/preview/`` (gallery, assets, grid) and embed the grid in the card."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PreviewError("preview needs matplotlib: pip install 'daam-datasets[preview]'") from None
    from transforms.attribution.overlay import (
        compose,
        heat_and_mask,
        row_image,
        row_maps,
        spans_map,
    )

    if n < 1:
        raise PreviewError(f"--n must be at least 1, got {n}")
    layout = OutputLayout(output)
    rows = read_rows(output, n)
    with tempfile.TemporaryDirectory(prefix="daam-preview-") as staging:
        os.makedirs(os.path.join(staging, ASSETS))
        samples, tiles, overlays = [], [], 0
        for i, row in enumerate(rows):
            image = row_image(row)
            maps = row_maps(row)
            shown = _fit(image.size, size)
            os.makedirs(os.path.join(staging, ASSETS, f"{i:03d}"))
            base = f"{ASSETS}/{i:03d}/image.jpg"
            _write(staging, base, _jpeg(image.resize(shown, _lanczos()) if shown != image.size else image))
            names = []
            chosen = grid_word(row) if len(tiles) < grid else -1
            for k, entry in enumerate(row["words"]):
                latent = spans_map(maps, [(int(entry["start"]), int(entry["end"]))])
                heat, mask = heat_and_mask(latent, (image.size[1], image.size[0]), threshold)
                picture = compose(image, heat, mask, cmap=cmap, alpha=alpha, size=shown)
                name = f"{ASSETS}/{i:03d}/w{k:02d}.jpg"
                _write(staging, name, _jpeg(picture))
                names.append(name)
                overlays += 1
                if k == chosen:
                    tiles.append((picture, str(entry["word"]), str(row["prompt"])))
            samples.append(_sample_html(i, row, base, names, shown))
        page = gallery_html(samples, _header(output, layout, len(rows), threshold, cmap), threshold)
        _write(staging, "index.html", page.encode("utf-8"))
        grid_png = render_grid(tiles) if tiles else _blank_grid()
        _write(staging, posixpath.basename(PREVIEW_IMAGE), grid_png)
        _replace_folder(layout, staging, PREVIEW_DIR)
    card_updated = update_card and _embed_in_card(layout)
    return PreviewResult(
        index=layout.path(PREVIEW_GALLERY),
        samples=len(rows),
        overlays=overlays,
        grid=layout.path(PREVIEW_IMAGE),
        card_updated=card_updated,
    )


def _lanczos() -> Any:
    from PIL import Image

    return Image.Resampling.LANCZOS


def _blank_grid() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def _write(staging: str, rel: str, data: bytes) -> None:
    with open(os.path.join(staging, rel), "wb") as fh:
        fh.write(data)


def _replace_folder(layout: OutputLayout, staging: str, folder: str) -> None:
    """Replace ``OUTPUT/folder`` by the staged files (stale assets of an earlier preview go)."""
    target = layout.path(folder)
    if layout.exists(target):
        layout.fs.rm(target, recursive=True)
    for parent, _, files in os.walk(staging):
        for name in sorted(files):
            local = os.path.join(parent, name)
            rel = os.path.relpath(local, staging).replace(os.sep, "/")
            remote = posixpath.join(target, rel)
            layout.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
            layout.fs.put_file(local, remote)


def _embed_in_card(layout: OutputLayout) -> bool:
    path = layout.path(CARD_FILE)
    if not layout.exists(path):
        return False
    with layout.fs.open(path, "rb") as fh:
        card = fh.read().decode("utf-8")
    updated = embed_preview(card)
    if updated == card:
        return False
    layout.write_bytes_atomic(path, updated.encode("utf-8"))
    return True

"""``index.html``: the Jinja2 template ``templates/index.html.j2`` and its context.

Every value from the data (prompts, words, tokens, ids, run settings) reaches the page through
autoescaped template variables. The page's CSS and script are the package files
``static/gallery.css`` and ``static/gallery.js``, inlined into ``<style>`` and ``<script>``: the
gallery stays one self-contained file that works offline, from ``file://`` and in headless
Chromium, with nothing but images next to it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from schemas.maps import stored_map_size
from transforms.shards.layout import RUN_FILE, OutputLayout

logger = logging.getLogger(__name__)

TEMPLATE = "index.html.j2"
STYLE_FILE = "gallery.css"
SCRIPT_FILE = "gallery.js"
CUT_TITLE = "beyond the text encoder window"


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt: plain text, the text of word button ``word``, or a struck-out tail."""

    text: str
    word: int | None = None
    cut: bool = False
    title: str = ""


@dataclass(frozen=True)
class WordButton:
    """Word ``k`` of a sample: its token span ``[start, end)``, overlay image and, when a concept
    of the sample is this word, that concept's overlay (the gallery's concept view)."""

    k: int
    start: int
    end: int
    overlay: str
    concept: str = ""


@dataclass(frozen=True)
class ConceptButton:
    """Concept ``k`` of a sample (``--concept-maps``): its name and ConceptAttention overlay."""

    k: int
    name: str
    overlay: str


@dataclass(frozen=True)
class SampleView:
    """One ``<figure>`` of the gallery."""

    index: int
    id: str
    seed: str
    prompt: str
    segments: list[Segment]
    words: list[WordButton]
    tokens: list[str]
    base: str
    width: int
    height: int
    concepts: list[ConceptButton]


@dataclass(frozen=True)
class Fact:
    """One fact of the page header: text, then optionally a ``<code>`` part."""

    text: str
    code: str = ""


def prompt_segments(prompt: str, words: list[dict[str, Any]], truncated: bool) -> list[Segment]:
    """The prompt with each word as a button segment: in place, with the prompt's own spelling,
    when the words align with the prompt text (a tail past the last word is struck out); else the
    words in order, then "(truncated)" when the prompt was cut."""
    lower = prompt.lower()
    segments: list[Segment] = []
    cursor = 0
    aligned = len(lower) == len(prompt)
    for k, entry in enumerate(words if aligned else []):
        text = str(entry["word"]).lower()
        at = lower.find(text, cursor) if text else -1
        if at < 0 or lower[cursor:at].strip():
            aligned = False
            break
        segments += [Segment(prompt[cursor:at]), Segment(prompt[at : at + len(text)], word=k)]
        cursor = at + len(text)
    if aligned:
        rest = prompt[cursor:]
        segments.append(Segment(rest, cut=True, title=CUT_TITLE) if rest.strip() else Segment(rest))
        return segments
    segments = []
    for k, entry in enumerate(words):
        segments += [Segment(" ")] if k else []
        segments.append(Segment(str(entry["word"]), word=k))
    if truncated:
        segments += [Segment(" "), Segment("(truncated)", cut=True)]
    return segments


def sample_view(index: int, row: dict[str, Any], base: str, overlays: list[str], size: tuple[int, int],
                concept_overlays: list[str] | None = None) -> SampleView:
    """The figure of row ``index``: ``base``, ``overlays`` (one per word) and ``concept_overlays``
    (one per concept of ``row["concepts"]``) are page-relative paths, ``size`` (width, height) the
    pictures' size."""
    words = list(row["words"])
    names = [str(c) for c in (row.get("concepts") or [])][: len(concept_overlays or [])]
    concepts = [ConceptButton(k, name, path) for k, (name, path) in enumerate(zip(names, concept_overlays or []))]
    by_name = {c.name.lower(): c.overlay for c in reversed(concepts)}
    return SampleView(
        index=index,
        id=str(row["id"]),
        seed=str(row.get("seed", "")),
        prompt=str(row["prompt"]),
        segments=prompt_segments(str(row["prompt"]), words, bool(row.get("truncated"))),
        words=[WordButton(k, int(w["start"]), int(w["end"]), overlays[k], by_name.get(str(w["word"]).lower(), ""))
               for k, w in enumerate(words)],
        tokens=[str(t) for t in row["tokens"]],
        base=base,
        width=size[0],
        height=size[1],
        concepts=concepts,
    )


def run_facts(layout: OutputLayout, shown: int) -> list[Fact]:
    """Header facts from ``run.json`` (images, model, steps, map size); the count alone without it."""
    facts: list[Fact] = []
    if layout.exists(layout.path(RUN_FILE)):
        try:
            run = layout.read_json(layout.path(RUN_FILE))
            settings = run.get("settings", {})
            model = settings.get("model", {}).get("model")
            gen = settings.get("generation", {})
            facts.append(Fact(f"{shown} of {run.get('summary', {}).get('rows', '?')} images"))
            if model:
                facts.append(Fact("model ", code=str(model)))
            if gen:
                facts.append(Fact(f"{gen.get('steps')} steps, guidance {gen.get('guidance_scale')}"))
            if run.get("map_size"):
                height, width = stored_map_size(run["map_size"], settings.get("map_size"))
                facts.append(Fact(f"maps {width}×{height} {settings.get('map_dtype', 'float16')}"))
        except (OSError, ValueError, AttributeError) as error:
            logger.debug("%s: header without run facts (%s)", RUN_FILE, error)
    return facts or [Fact(f"{shown} images")]


@functools.cache
def environment() -> Environment:
    """The template environment: package templates, HTML autoescaping, undefined names fail."""
    return Environment(
        loader=PackageLoader("pipeline.preview", "templates"),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def static_text(name: str) -> Markup:
    """A package file of ``static/`` as trusted markup (our own CSS or script)."""
    return Markup(resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8"))


def render_page(samples: list[SampleView], facts: list[Fact], threshold: float, cmap: str) -> str:
    """The whole ``index.html``."""
    return environment().get_template(TEMPLATE).render(
        samples=samples,
        concept_view=any(sample.concepts for sample in samples),
        facts=facts,
        threshold=threshold,
        cmap=cmap,
        style=static_text(STYLE_FILE),
        script=static_text(SCRIPT_FILE),
    )

"""The dataset card (``README.md``): ``huggingface_hub``'s ``DatasetCardData`` for the YAML front
matter the Hub and ``load_dataset`` read, Jinja2 templates (``templates/``) for the text.

A run renders the card from the output's own records (``run.json``, the shard markers). Later steps
keep whatever a user edited: they parse the card with ``DatasetCard`` (front matter kept as
written) and change its Markdown body section by section (``## `` headings): ``preview`` adds or
drops the Preview section, ``publish`` names the repository in the load example.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from datasets import Features
import jinja2
from huggingface_hub import DatasetCard, DatasetCardData

from schemas.output_records import RunInfo, ShardSummary
from schemas.maps import LEVELS, QUANTISED, SCALE_COLUMNS, stored_map_size
from schemas.record import COLUMN_DOCS, SCHEMA_VERSION, run_features, segmentation_features
from transforms.attribution.classes import BACKGROUND_NAME
from transforms.attribution.config import DEFAULT_CMAP, DEFAULT_THRESHOLD
from transforms.attribution.overlay import OVERLAY_QUALITY, OVERLAY_SIDE, OVERLAY_WORDS
from transforms.shards.layout import CARD_FILE, RUN_FILE, SEGMENTATION_DIR, SEGMENTATION_FORMAT, OutputLayout

CITATION = """@inproceedings{tang2023daam,
  title     = {What the {DAAM}: Interpreting Stable Diffusion Using Cross Attention},
  author    = {Tang, Raphael and Liu, Linqing and Pandey, Akshat and Jiang, Zhiying and Yang, Gefei and Kumar, Karun and Stenetorp, Pontus and Lin, Jimmy and Ture, Ferhan},
  booktitle = {Proceedings of the 61st Annual Meeting of the Association for Computational Linguistics},
  year      = {2023}
}"""
PREVIEW_IMAGE = "preview/grid.png"  # written by ``daam-datasets preview``, embedded when present
PREVIEW_GALLERY = "preview/index.html"
PLACEHOLDER_REPO = "path/or/org-name"  # the load example's dataset name before publishing
TAGS = ["daam", "attribution", "cross-attention", "stable-diffusion", "synthetic", "weak-supervision"]
UNFINISHED_DATA = "data/RUN-NOT-FINISHED-*.parquet"  # matches no file: load_dataset refuses the folder


SECTION = "## "
PREVIEW_HEADING, CONTENTS_HEADING = "## Preview", "## Contents"
LOAD_HEADINGS = ("## Load", "## Segmentation")  # the sections with a load example
JOINT_ARCHITECTURES = ("sd3", "flux")  # where --joint-normalize changes the maps


def _template(name: str) -> str:
    return resources.files("pipeline").joinpath("templates", name).read_text(encoding="utf-8")


def preview_section(image: str = PREVIEW_IMAGE) -> str:
    """The card's Preview section: the grid image and where the HTML gallery is."""
    values = {"preview_image": image, "preview_gallery": PREVIEW_GALLERY, "cmap": DEFAULT_CMAP, "threshold": DEFAULT_THRESHOLD}
    return jinja2.Template(_template("card_preview.md"), keep_trailing_newline=True).render(**values)


def segmentation_section(segmentation: dict[str, Any] | None, summary: dict[str, Any], repo_id: str) -> str:
    """The card's Segmentation section (classes, recipe, filter columns); empty without classes."""
    if not segmentation:
        return ""
    values = {**segmentation, "labels": [BACKGROUND_NAME, *segmentation["classes"]], "rows": summary.get("segmentation_rows", 0), "repo_id": repo_id}
    return jinja2.Template(_template("card_segmentation.md"), keep_trailing_newline=True).render(**values)


def id2label(segmentation: dict[str, Any]) -> dict[str, str]:
    """``id2label.json`` of a run with classes: ``{"0": "background", "1": first class, …}``."""
    return {str(i): name for i, name in enumerate([BACKGROUND_NAME, *segmentation["classes"]])}


_SIZE_UNITS = ("", "K", "M", "B", "T")


def size_category(rows: int) -> str:
    """The Hub's size category for a row count (``n<1K``, ``1K<n<10K`` … ``100B<n<1T``, ``n>1T``)."""
    if rows < 1_000:
        return "n<1K"
    low = 1_000
    while rows >= low * 10 and low < 10**14:
        low *= 10
    if low >= 10**12 and rows >= 10**12:
        return "n>1T"

    def name(n: int) -> str:
        unit = next(i for i in range(len(_SIZE_UNITS) - 1, -1, -1) if n >= 1000**i)
        return f"{n // 1000**unit}{_SIZE_UNITS[unit]}"

    return f"{name(low)}<n<{name(low * 10)}"


def _config(path: str, name: str = "default") -> dict[str, Any]:
    return {"config_name": name, "data_files": [{"split": "train", "path": path}]}


def _info(name: str, features: Features, size: int, rows: int) -> dict[str, Any]:
    return {
        "config_name": name,
        "features": features._to_yaml_list(),
        "splits": [{"name": "train", "num_bytes": size, "num_examples": rows}],
        "download_size": size,
        "dataset_size": size,
    }


def card_data(features: Features, summary: dict[str, Any], license_id: str) -> DatasetCardData:
    """YAML front matter: configs, features, split sizes, license, tags."""
    parquet = "parquet" in summary["formats"]
    # WebDataset is declared only when it is the sole format (one builder per config)
    configs = [_config("data/train-*.parquet" if parquet else "wds/train-*.tar")]
    infos = [_info("default", features, summary["parquet_bytes"], summary["rows"])] if parquet else []
    if summary.get("segmentation_rows"):  # a pattern must match a file: no config without rows
        configs.append(_config(f"{SEGMENTATION_DIR}/train-*.parquet", SEGMENTATION_FORMAT))
        infos.append(_info(SEGMENTATION_FORMAT, segmentation_features(), summary["segmentation_bytes"], summary["segmentation_rows"]))
    extra: dict[str, Any] = {"configs": configs}
    if infos:
        extra["dataset_info"] = infos[0] if len(infos) == 1 else infos
    return DatasetCardData(
        license=license_id,
        task_categories=["image-segmentation", "text-to-image"],
        tags=TAGS,
        size_categories=[size_category(summary["rows"])],
        pretty_name="DAAM attribution dataset",
        **extra,
    )


def _steps(first: int, stop: int) -> str:
    return f"{first}" if stop - first == 1 else f"{first}–{stop - 1}"


def trace_rows(generation: dict[str, Any], selection: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The Contents rows that say how the maps were selected: from ``run.json``'s ``trace`` (the
    selection resolved for the model) or, for outputs written before it existed, the settings."""
    trace = generation["trace"]
    steps = generation["steps"]
    factors = ", ".join(map(str, trace.get("factors") or [])) or "all kept"
    if selection is None:
        layers = f"`{trace['layers']}`; factors {factors}"
        given = trace.get("step_range")
        return [("traced layers", f"{layers}; steps {given or 'all'}")]
    counts = ", ".join(f"{kind} {n}" for kind, n in selection["modules"].items())
    first, stop = selection["step_range"]["resolved"]
    given = selection["step_range"]["given"]
    rows = [
        ("traced layers", f"`{selection['layers']}` on {selection['pipeline']} ({selection['architecture']}): "
                          f"{len(selection['traced'])} modules ({counts}), listed in `run.json`; factors {factors}"),
        ("traced steps", f"{'all' if given is None else f'`{given}` of'} {steps} → steps {_steps(first, stop)}"),
        ("heads / joint normalisation", f"{selection['heads']} / {selection['joint_normalize']}"
                                        f"{'' if selection['architecture'] in JOINT_ARCHITECTURES else ' (applies to SD3/Flux only)'}"),
    ]
    if selection.get("per_timestep"):
        bins = ", ".join(_steps(a, b) for a, b in selection["timestep_bins"])
        rows.append(("per-timestep maps", f"{selection['per_timestep']} bins of steps {bins} (column `timestep_maps`)"))
    return rows + concept_rows(generation)


def concept_rows(generation: dict[str, Any]) -> list[tuple[str, str]]:
    """The Contents row of the ConceptAttention maps (none for a run without ``--concept-maps``)."""
    concepts = generation.get("concepts")
    if concepts is None:
        return []
    which = ", ".join(concepts["concepts"]) if concepts.get("concepts") else "each prompt's matched classes, else its content words"
    blocks = concepts.get("blocks")
    blocks_text = "the last four double-stream blocks" if blocks is None else f"double-stream blocks `{blocks[0]}:{'' if blocks[1] is None else blocks[1]}`"
    steps = concepts.get("step_range")
    steps_text = "every step" if steps is None else f"steps {_steps(steps[0], steps[1] or generation['steps'])}"
    return [("concept maps", f"ConceptAttention (column `concept_maps`, names in `concepts`): concepts {which}; "
                             f"{blocks_text}, {steps_text}; softmax over concepts of output-space dot products")]


def storage_rows(settings: dict[str, Any], grid: list[int]) -> list[tuple[str, str]]:
    """The Contents rows that say how maps are stored (size, dtype) and whether rows have an overlay."""
    height, width = stored_map_size(grid, settings.get("map_size"))
    size = f"{width}×{height}"
    if settings.get("map_size") is not None:
        size += f", resized bicubically from the {grid[1]}×{grid[0]} map grid (`--map-size {settings['map_size']}`)"
    else:
        size += " (the model's map grid)"
    dtype = settings["map_dtype"]
    if dtype == QUANTISED:
        dtype = (f"uint8 codes, one scale per map in `{SCALE_COLUMNS['token_maps']}`: value = code × scale / {LEVELS} "
                 f"(within 1/{2 * LEVELS} of each map's maximum)")
    overlay = (f"column `overlay`: the {OVERLAY_WORDS} most peaked words' maps on the image (≤ {OVERLAY_SIDE} px, "
               f"JPEG quality {OVERLAY_QUALITY}), the words in `overlay_words`" if settings.get("overlay")
               else "none (`--no-overlay`)")
    return [("stored maps", size), ("map dtype", dtype), ("overlay", overlay)]


def _schema_table(features: Features) -> str:
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{feature!r}` | {COLUMN_DOCS.get(name, '')} |" for name, feature in features.items()]
    return "\n".join(lines)


def render_card(
    features: Features,
    summary: dict[str, Any],
    settings: dict[str, Any],
    license_id: str,
    preview_image: str | None = None,
    repo_id: str = PLACEHOLDER_REPO,
    selection: dict[str, Any] | None = None,
) -> str:
    """The full card text; ``preview_image`` (a repo path, e.g. ``PREVIEW_IMAGE``) is embedded,
    ``repo_id`` is the dataset name in the load example and ``selection`` is ``run.json``'s
    ``trace``."""
    map_h, map_w = stored_map_size(summary["map_size"], settings.get("map_size"))
    generation = settings["generation"]
    card = DatasetCard.from_template(
        card_data(features, summary, license_id),
        template_str=_template("dataset_card.md"),
        summary=summary,
        model=settings["model"],
        generation=generation,
        trace=generation["trace"],
        trace_rows=trace_rows(generation, selection),
        storage_rows=storage_rows(settings, summary["map_size"]),
        quantised=settings["map_dtype"] == QUANTISED,
        overlay=bool(settings.get("overlay")),
        timestep_bins=generation["trace"].get("per_timestep"),
        map_dtype=settings["map_dtype"],
        map_size=settings.get("map_size"),
        map_h=map_h,
        map_w=map_w,
        schema_table=_schema_table(features),
        schema_version=SCHEMA_VERSION,
        preview_section=preview_section(preview_image) if preview_image else "",
        segmentation_section=segmentation_section(settings.get("segmentation"), summary, repo_id),
        repo_id=repo_id,
        threshold=DEFAULT_THRESHOLD,
        citation=CITATION,
    )
    return str(card) + "\n"


def card_summary(info: RunInfo, stats: list[ShardSummary]) -> dict[str, Any]:
    """The card's figures from ``run.json`` and the committed shards."""
    rows = sum(s.rows for s in stats)
    failed = sum(s.failed for s in stats) + int((info.summary or {}).get("read_failures", 0))
    return {
        "rows": rows,
        "failed": failed,
        "shards": info.shards,
        "formats": list(info.settings["formats"]),
        "parquet_bytes": sum(s.file_bytes("parquet") for s in stats),
        "segmentation_rows": sum(s.segmentation_rows for s in stats),
        "segmentation_bytes": sum(s.file_bytes(SEGMENTATION_FORMAT) for s in stats),
        "map_size": list(info.map_size),
        "image_size": list(info.image_size),
    }


def output_card(
    layout: OutputLayout,
    stats: list[ShardSummary],
    preview_image: str | None = None,
    repo_id: str = PLACEHOLDER_REPO,
) -> str:
    """The card of a finished output, rendered from its ``run.json`` and shard markers."""
    info = RunInfo.from_dict(layout.read_json(layout.path(RUN_FILE)))
    settings = info.settings
    features = run_features(settings, info.map_size)
    summary = card_summary(info, stats)
    return render_card(features, summary, settings, settings["dataset_license"], preview_image, repo_id, info.trace)


def unfinished_card() -> str:
    """A card that ``load_dataset`` refuses (its data pattern matches no file), until the run completes."""
    data = DatasetCardData(configs=[_config(UNFINISHED_DATA)])
    return str(DatasetCard.from_template(data, template_str=_template("unfinished_card.md"))) + "\n"


def write_card(layout: OutputLayout, text: str) -> bool:
    """Write the card if its text changed; whether it was written (a rerun changes no file)."""
    path = layout.path(CARD_FILE)
    if layout.exists(path) and layout.read_text(path) == text:
        return False
    layout.write_bytes_atomic(path, text.encode("utf-8"))
    return True


def _sections(body: str) -> list[str]:
    """The Markdown body split before each ``## `` heading (the first part is what precedes them)."""
    parts: list[str] = [""]
    for line in body.splitlines(keepends=True):
        if line.startswith(SECTION):
            parts.append("")
        parts[-1] += line
    return parts


def _heading(section: str) -> str:
    return section.split("\n", 1)[0].rstrip()


def with_preview(card_text: str, image: str | None = PREVIEW_IMAGE) -> str:
    """``card_text`` with its Preview section (before Contents) for ``image``, or without one for
    ``None``; front matter and every other section stay as they are."""
    card = DatasetCard(card_text)
    sections = [s for s in _sections(card.text) if _heading(s) != PREVIEW_HEADING]
    if image is not None:
        at = next((i for i, s in enumerate(sections) if _heading(s) == CONTENTS_HEADING), None)
        if at is None:
            return card_text  # not a card of ours: leave it alone
        sections.insert(at, preview_section(image) + "\n")
    card.text = "".join(sections)
    return str(card)


def for_repo(card_text: str, repo_id: str) -> str:
    """``card_text`` with its load example naming ``repo_id`` instead of the placeholder."""
    card = DatasetCard(card_text)
    sections = _sections(card.text)
    old, new = f'load_dataset("{PLACEHOLDER_REPO}"', f'load_dataset("{repo_id}"'
    card.text = "".join(s.replace(old, new) if _heading(s) in LOAD_HEADINGS else s for s in sections)
    return str(card)

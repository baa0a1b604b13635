"""Command-line options of ``daam-datasets run`` and the typed settings they fill in."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from schemas.maps import MAP_DTYPES
from transforms.attribution import GenerationConfig, TraceConfig
from transforms.attribution.classes import SHIPPED, load_vocabulary
from transforms.attribution.config import (
    CONCEPT_SPACES,
    IGNORE_LOW,
    LABEL_MAP_KINDS,
    LABEL_THRESHOLD,
    LAYER_KINDS,
    MAX_CONCEPTS,
    REFINE_FACTOR,
    REFINE_POWER,
    ConceptConfig,
    SegmentationConfig,
    parse_layers,
)
from transforms.attribution.steps import resolve_fractions
from transforms.models.family import default_guidance, label_defaults
from transforms.models.loading import DTYPES, SCHEDULERS, ModelSpec
from transforms.corpus import ColumnNames
from transforms.models.tiny_sd import TINY_MODEL_NAME

from . import argtypes

FORMATS = ("parquet", "webdataset")


def _formats(value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [v for v in items if v not in FORMATS]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(FORMATS)} (comma-separated), got {value!r}")
    return items


MAX_STEPS = 1000  # the training timesteps of Stable Diffusion schedulers: more steps cannot be scheduled
MAX_GUIDANCE = 100.0  # far above any useful guidance (SD uses 1-20); beyond it images are noise
MAX_SIDE = 65536  # pixels per side; what fits in memory is checked against the model (transforms.models.memory)
MAX_BATCH = 1024  # prompts per UNet call, images per prompt, torch threads
MAX_FACTOR = 64  # latent downsampling factors are powers of two; SD 1.x/2.x have 1, 2, 4, 8
MAX_BLOCKS = 1000  # double-stream blocks of a transformer (FLUX.1: 19, SD3.5-large: 38)
MAX_SHARD_SIZE = 1_000_000
MAX_SHARDS = 99_999  # shard names carry the count in five digits (train-00000-of-00004)
MAX_PLAN_WORKERS = 256
SEED_LIMIT = 2**63
MAX_REFINE_POWER = 64  # A^64 of a row-stochastic affinity is already its stationary spread
MAX_CLASS_FILE_BYTES = 1 << 20  # a class or synonym list beyond 1 MiB is not a class list
SEGMENTATION_FLAGS = ("class_synonyms", "append_class_prompt", "refine", "refine_factor", "refine_power", "label_threshold",
                      "ignore_below", "label_maps")

_batch = argtypes.integer(1, MAX_BATCH)
_side = argtypes.integer(8, MAX_SIDE, multiple_of=8)
_factors = argtypes.comma_list(
    argtypes.power_of_two(1, MAX_FACTOR), f"comma-separated powers of two in [1, {MAX_FACTOR}] (e.g. 1,2,4)"
)
# trace options whose default leaves a run's fingerprint as it was before they existed
TRACE_DEFAULTS = {"step_fractions": None, "heads": "mean", "joint_normalize": "all", "per_timestep": None}
# storage options whose value writes what runs wrote before they existed (their fingerprint is kept):
# the native map grid, and no overlay (an overlay is a new column, so the default run's fingerprint moved)
STORAGE_UNCHANGED = {"map_size": None, "overlay": False}


def _layers(value: str) -> str:
    """``--layers``: a preset or a comma list of kinds and processor-name globs (``parse_layers``)."""
    try:
        return parse_layers(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _class_file(flag: str, path: str) -> str:
    """``path`` if it is a readable class or synonym file of sane size (``ValueError`` naming ``flag``)."""
    import os

    if not os.path.exists(path):
        raise ValueError(f"{flag} {path!r}: no such file (shipped class lists: {', '.join(SHIPPED)})")
    if not os.path.isfile(path):
        raise ValueError(f"{flag} {path!r} is not a file")
    if os.path.getsize(path) > MAX_CLASS_FILE_BYTES:
        raise ValueError(f"{flag} {path!r} is over {MAX_CLASS_FILE_BYTES >> 20} MiB: not a class list")
    return path


def segmentation_config(o: Any) -> SegmentationConfig | None:
    """The segmentation settings of ``--classes`` and its flags; ``None`` without ``--classes``
    (``ValueError`` for a segmentation flag without it, or a bad class or synonym file)."""
    if o.classes is None:
        given = [f"--{name.replace('_', '-')}" for name in SEGMENTATION_FLAGS if getattr(o, name, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --classes (voc, coco or a class file)")
        return None
    source = o.classes if o.classes in SHIPPED else _class_file("--classes", o.classes)
    synonyms = None if o.class_synonyms is None else _class_file("--class-synonyms", o.class_synonyms)
    try:
        vocabulary = load_vocabulary(source, synonyms)
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the class list: {error}") from error
    defaults = label_defaults(o.model)
    chosen = {
        "label_maps": o.label_maps,
        "refine": o.refine,
        "refine_factor": o.refine_factor,
        "power": o.refine_power,
        "threshold": o.label_threshold,
        "ignore_low": o.ignore_below,
        "append_class_prompt": o.append_class_prompt,
    }
    values = {**defaults, **{k: v for k, v in chosen.items() if v is not None}}
    threshold = values.get("threshold", LABEL_THRESHOLD)
    if values.get("ignore_low", min(IGNORE_LOW, threshold)) > threshold:
        raise ValueError(f"--ignore-below {values['ignore_low']} is above --label-threshold {threshold}")
    values.setdefault("ignore_low", min(IGNORE_LOW, threshold))
    return SegmentationConfig(vocabulary=vocabulary, **values)


def _step_selection(step_range: argtypes.StepRange | None, steps: int, flag: str = "--step-range") -> dict[str, Any]:
    """The ``TraceConfig`` fields of ``--step-range``: indices as given, fractions as given (the
    config resolves them); ``ValueError`` for indices outside ``--steps`` or fractions that round
    to no step."""
    if step_range is None:
        return {}
    start, stop, fractions = step_range
    if fractions:
        first, last = resolve_fractions(start, stop, steps)
        if last <= first:
            raise ValueError(
                f"{flag} {step_range} selects no step of --steps {steps}: both ends round to step "
                f"boundary {first} (fractions round to the nearest of 0..{steps}); widen the range or raise --steps"
            )
        return {"step_fractions": (float(start), float(stop))}
    if start >= steps or (stop is not None and stop > steps):
        raise ValueError(
            f"{flag} {step_range} is outside --steps {steps}: steps are numbered 0 to {steps - 1} "
            f"(STOP exclusive, at most {steps}); e.g. {flag} 0:{steps}"
        )
    return {"step_range": (start, stop)}


def _concepts(value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items:
        raise argparse.ArgumentTypeError(f"give a comma list of concept words, got {value!r}")
    if len(items) > MAX_CONCEPTS:
        raise argparse.ArgumentTypeError(f"{len(items)} concepts given; at most {MAX_CONCEPTS}")
    return items


def concept_config(o: Any) -> ConceptConfig | None:
    """The ConceptAttention settings of ``--concept-maps`` and its flags (``None`` without it;
    ``ValueError`` in one line for a flag without it or steps outside ``--steps``)."""
    flags = {"concepts": o.concepts, "concept_blocks": o.concept_blocks, "concept_steps": o.concept_steps,
             "concept_space": o.concept_space}
    if not o.concept_maps:
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --concept-maps")
        return None
    steps = None
    if o.concept_steps is not None:
        selection = _step_selection(o.concept_steps, o.steps, "--concept-steps")
        fractions = selection.get("step_fractions")
        steps = resolve_fractions(*fractions, o.steps) if fractions else selection["step_range"]
    return ConceptConfig(concepts=o.concepts, blocks=o.concept_blocks, step_range=steps, space=o.concept_space or "output")


def trace_config(o: Any) -> TraceConfig:
    """The trace selection of ``--layers``, ``--factors``, ``--step-range``, ``--heads``,
    ``--joint-normalize`` and ``--per-timestep`` for ``--steps`` (``ValueError`` in one line for a
    range without steps or more time bins than traced steps)."""
    trace = TraceConfig(
        layers=o.layers,
        factors=o.factors,
        heads=o.heads,
        joint_normalize=o.joint_normalize,
        per_timestep=o.per_timestep,
        **_step_selection(o.step_range, o.steps),
    )
    if trace.per_timestep is not None:
        start, stop = trace.traced_steps(o.steps)
        if stop - start < trace.per_timestep:
            raise ValueError(
                f"--per-timestep {trace.per_timestep}: only {stop - start} steps are traced (steps {start}..{stop - 1} "
                f"of --steps {o.steps}) and every time bin needs one; use at most {stop - start}"
            )
    return trace


class DaamOptions(PipelineOptions):
    """daam-datasets' own pipeline options (Beam's options pass through unchanged)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--prompts", default=None, help="prompt corpus: .txt, .jsonl, .csv, .parquet, HF dataset folder or hf:NAME")
        parser.add_argument("--output", default=None, help="output folder (a Hugging Face dataset repository); local, gs:// or s3://")
        parser.add_argument("--model", default=TINY_MODEL_NAME, help="'tiny', 'tiny-sdxl', 'tiny-sd3', 'tiny-flux' (built-in, any prompt), 'colour-world' (built-in, trained, truth known), a local SD/SDXL/SD3/Flux diffusers folder or a hub id")
        parser.add_argument("--revision", default=None, help="model revision (hub ids)")
        parser.add_argument("--scheduler", default=None, choices=sorted(SCHEDULERS), help="replace the model's own scheduler")
        parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, …")
        parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model weights dtype")
        parser.add_argument("--steps", type=argtypes.integer(1, MAX_STEPS), default=20, help="denoising steps")
        parser.add_argument("--guidance-scale", type=argtypes.number(0.0, MAX_GUIDANCE), default=None, help="classifier-free guidance (<= 1 disables it; default 7.5, colour-world 1)")
        parser.add_argument("--height", type=_side, default=None, help=f"image height in pixels (multiple of 8, at most {MAX_SIDE}; must fit in memory)")
        parser.add_argument("--width", type=_side, default=None, help=f"image width in pixels (multiple of 8, at most {MAX_SIDE}; must fit in memory)")
        parser.add_argument("--seed", type=argtypes.integer(0, SEED_LIMIT - 1, bounds="[0, 2**63)"), default=0, help="run seed: seeds rows without their own")
        parser.add_argument("--batch-size", type=_batch, default=4, help="prompts per UNet call")
        parser.add_argument("--images-per-prompt", type=_batch, default=1, help="images (rows) per prompt")
        parser.add_argument("--negative-prompt", default=None, help="negative prompt for rows without their own")
        parser.add_argument("--map-dtype", default="float16", choices=MAP_DTYPES, help="dtype of stored maps; uint8: each map quantised by its own maximum, scales in token_map_scale (see docs/map-storage.md)")
        parser.add_argument("--map-size", type=argtypes.integer(1, MAX_SIDE), default=None, help="store maps resized (bicubic) so their longer side is S (square images: SxS); at most the model's map grid (default: the grid itself)")
        parser.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True, help="add the overlay column: the image with its strongest words' maps, a small JPEG the Hub's viewer shows (default: on)")
        parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (the traced attention layers stay exact)")
        trace = parser.add_argument_group("trace selection (see docs/trace-selection.md)")
        trace.add_argument("--layers", type=_layers, default="reference", help=f"text-attention modules traced: reference (DAAM), all, or a comma list of block kinds ({', '.join(LAYER_KINDS)}) and processor-name globs (up_blocks.1.*)")
        trace.add_argument("--factors", type=_factors, default=None, help="keep only these latent factors, e.g. 1,2,4")
        trace.add_argument("--step-range", type=argtypes.step_range(MAX_STEPS), default=None, help="accumulate steps START:STOP only: indices (0-based, STOP exclusive, within --steps) or fractions of --steps (0.2:0.8, :0.5)")
        trace.add_argument("--heads", default="mean", choices=("mean", "max"), help="aggregate attention heads by their mean (DAAM) or maximum")
        trace.add_argument("--joint-normalize", default="all", choices=("all", "text"), help="SD3/Flux: token maps from the softmax over all keys (the model's own) or over the text keys only")
        trace.add_argument("--per-timestep", type=argtypes.integer(1, MAX_STEPS), default=None, help="also store maps of K contiguous bins of the traced steps (column timestep_maps)")
        concept = parser.add_argument_group("concept maps (ConceptAttention, SD3/Flux; see docs/concept-attention.md)")
        concept.add_argument("--concept-maps", action="store_true", default=False, help="also store ConceptAttention maps (columns concepts, concept_maps): the prompt's content words, the matched --classes names or --concepts")
        concept.add_argument("--concepts", type=_concepts, default=None, help="comma list of concepts for every prompt (default: each prompt's matched classes, else its content words)")
        concept.add_argument("--concept-blocks", type=argtypes.index_range(MAX_BLOCKS), default=None, help="double-stream blocks START:STOP of the concept maps (default: the last four, the official choice)")
        concept.add_argument("--concept-steps", type=argtypes.step_range(MAX_STEPS), default=None, help="denoising steps START:STOP (indices or fractions of --steps) of the concept maps (default: every step)")
        concept.add_argument("--concept-space", choices=CONCEPT_SPACES, default=None, help="output: ConceptAttention (attention outputs, the default); cross-attention: the paper's baseline (image queries . concept keys)")
        parser.add_argument("--format", dest="formats", type=_formats, default=("parquet",), help="parquet,webdataset (either or both)")
        parser.add_argument("--shard-size", type=argtypes.integer(1, MAX_SHARD_SIZE), default=None, help="prompts per shard (default 256)")
        parser.add_argument("--num-shards", type=argtypes.integer(1, MAX_SHARDS), default=None, help="number of shards (instead of --shard-size)")
        parser.add_argument("--prompt-column", default="prompt", help="column holding the prompt")
        parser.add_argument("--id-column", default="id", help="column holding a stable id (optional)")
        parser.add_argument("--seed-column", default="seed", help="column holding a per-row seed (optional)")
        parser.add_argument("--negative-prompt-column", default="negative_prompt", help="column with per-row negative prompts")
        parser.add_argument("--split", default="train", help="split of a Hugging Face dataset corpus")
        parser.add_argument("--limit", type=argtypes.integer(1, SEED_LIMIT - 1, bounds="[1, 2**63)"), default=None, help="use only the first N valid prompts")
        parser.add_argument("--plan-workers", type=argtypes.integer(1, MAX_PLAN_WORKERS), default=None, help="processes that read and plan a large corpus of files on this machine before the first image (default: its cores, up to 8; 1: one)")
        parser.add_argument("--max-failure-rate", type=argtypes.number(0.0, 1.0), default=0.01, help="fail the run above this fraction of failed prompts")
        parser.add_argument("--overwrite", action="store_true", help="start over in an earlier output (removes only the files its run wrote)")
        parser.add_argument("--torch-threads", type=_batch, default=None, help="torch intra-op threads per worker")
        parser.add_argument("--license", dest="dataset_license", default="other", help="license id for the dataset card")
        seg = parser.add_argument_group("segmentation (label maps; see docs/segmentation.md)")
        seg.add_argument("--classes", default=None, help=f"class list: {' or '.join(SHIPPED)} (shipped) or a file, one class a line; adds label maps and the segmentation config")
        seg.add_argument("--class-synonyms", default=None, help="synonym file ('class: synonym, synonym' lines); replaces the shipped list's synonyms")
        seg.add_argument("--append-class-prompt", action="store_true", default=None, help="generate from 'prompt; names of its classes' (Dataset Diffusion)")
        seg.add_argument("--label-maps", choices=LABEL_MAP_KINDS, default=None, help="class maps from the class words' DAAM maps or from ConceptAttention maps of the class names (SD3, Flux; implies --concept-maps); default per model family, chosen by the evaluate leaderboard (README)")
        seg.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None, help="refine class maps with self-attention (default per model family: on for UNet models, off for SD3/Flux; README)")
        seg.add_argument("--refine-factor", type=argtypes.power_of_two(1, MAX_FACTOR), default=None, help=f"latent factor of the self-attention layers used (default {REFINE_FACTOR}: 32x32 at 512 px)")
        seg.add_argument("--refine-power", type=argtypes.integer(1, MAX_REFINE_POWER), default=None, help=f"exponent of the self-attention affinity (default per family: 1 for UNet models, chosen by the leaderboard; Dataset Diffusion's {REFINE_POWER})")
        seg.add_argument("--label-threshold", type=argtypes.number(0.0, 1.0), default=None, help=f"foreground threshold of the min-max class score (default per family: 0.4 UNet models, 0.5 colour-world, {LABEL_THRESHOLD} SD3/Flux; README)")
        seg.add_argument("--ignore-below", type=argtypes.number(0.0, 1.0), default=None, help=f"scores in [this, threshold) are labelled 255 = ignore (default {IGNORE_LOW})")


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, typed; built from ``DaamOptions``."""

    prompts: str
    output: str
    model: ModelSpec = field(default_factory=ModelSpec)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    seed: int = 0
    batch_size: int = 4
    map_dtype: str = "float16"
    map_size: int | None = None  # --map-size: the stored maps' longer side (None: the model's map grid)
    overlay: bool = True
    formats: tuple[str, ...] = ("parquet",)
    shard_size: int | None = None
    num_shards: int | None = None
    columns: ColumnNames = field(default_factory=ColumnNames)
    split: str = "train"
    limit: int | None = None
    max_failure_rate: float = 0.01
    overwrite: bool = False
    torch_threads: int | None = None
    plan_workers: int | None = None  # --plan-workers (None: ``default_workers()``)
    dataset_license: str = "other"
    segmentation: dict[str, Any] | None = None  # ``SegmentationConfig.to_dict()`` with --classes

    @property
    def segmentation_config(self) -> SegmentationConfig | None:
        """The typed segmentation settings (``None``: a run without classes)."""
        return None if self.segmentation is None else SegmentationConfig.from_dict(self.segmentation)

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "RunSettings":
        """Fill settings from Beam pipeline options holding ``DaamOptions``."""
        return cls.from_args(options.view_as(DaamOptions))

    @classmethod
    def from_args(cls, o: Any) -> "RunSettings":
        """Fill settings from parsed ``DaamOptions`` arguments (``ValueError`` if inconsistent)."""
        for flag in ("prompts", "output"):
            if not getattr(o, flag):
                raise ValueError(f"--{flag} is required")
        trace = trace_config(o)
        seg = segmentation_config(o)
        concepts = concept_config(o)
        if seg is not None and seg.label_maps == "concept" and concepts is None:
            concepts = ConceptConfig()  # the class names' concept maps are the labels' source: stored too
        generation = GenerationConfig(
            steps=o.steps,
            guidance_scale=default_guidance(o.model) if o.guidance_scale is None else o.guidance_scale,
            height=o.height,
            width=o.width,
            images_per_prompt=o.images_per_prompt,
            negative_prompt=o.negative_prompt,
            trace=trace,
            concepts=concepts,
        )
        if o.shard_size is not None and o.num_shards is not None:
            raise ValueError("give --shard-size or --num-shards, not both")
        if o.classes is not None and "parquet" not in o.formats:
            # datasets reads every config of a repository with one builder: a WebDataset default
            # config would read the segmentation config's Parquet files as tars
            raise ValueError("--classes needs Parquet: its segmentation config is Parquet, and a card cannot mix it "
                             "with a WebDataset-only default config; use --format parquet,webdataset")
        return cls(
            prompts=o.prompts,
            output=o.output,
            model=ModelSpec(o.model, o.revision, o.scheduler, o.device, o.dtype, compile=o.compile),
            generation=generation,
            seed=o.seed,
            batch_size=o.batch_size,
            map_dtype=o.map_dtype,
            map_size=o.map_size,
            overlay=o.overlay,
            formats=tuple(o.formats),
            shard_size=o.shard_size,
            num_shards=o.num_shards,
            columns=ColumnNames(o.prompt_column, o.id_column, o.seed_column, o.negative_prompt_column),
            split=o.split,
            limit=o.limit,
            max_failure_rate=o.max_failure_rate,
            overwrite=o.overwrite,
            torch_threads=o.torch_threads,
            plan_workers=o.plan_workers,
            dataset_license=o.dataset_license,
            segmentation=None if seg is None else seg.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (recorded in run.json)."""
        return json.loads(json.dumps(asdict(self), default=list))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSettings":
        """Inverse of ``to_dict`` (used by workers, and by ``validate --repair`` on ``run.json``):
        settings recorded before an option existed read as what those runs did (no overlay)."""
        data = {"overlay": False, **data}
        gen = dict(data["generation"])
        trace = dict(gen.pop("trace"))
        for key in ("factors", "step_range", "step_fractions"):
            if trace.get(key) is not None:
                trace[key] = tuple(trace[key])
        concepts = gen.pop("concepts", None)
        return cls(
            **{
                **data,
                "model": ModelSpec(**data["model"]),
                "generation": GenerationConfig(
                    **gen, trace=TraceConfig(**trace), concepts=None if concepts is None else ConceptConfig.from_dict(concepts)
                ),
                "formats": tuple(data["formats"]),
                "columns": ColumnNames(**data["columns"]),
            }
        )

    def output_fingerprint(self, corpus_digest: str) -> str:
        """Hash of everything that decides the output's content (not batch size or runner)."""
        relevant = self.to_dict()
        for key in ("prompts", "output", "batch_size", "max_failure_rate", "overwrite", "torch_threads", "plan_workers", "dataset_license"):
            relevant.pop(key)
        relevant["model"].pop("device")
        relevant["model"].pop("compile", None)  # like the device: equal results within tolerance, sooner
        for key, unchanged in STORAGE_UNCHANGED.items():
            if relevant.get(key, unchanged) == unchanged:
                relevant.pop(key, None)
        if relevant["generation"].get("concepts") is None:
            relevant["generation"].pop("concepts", None)  # runs without concept maps keep their fingerprint
        trace = relevant["generation"]["trace"]
        for key, default in TRACE_DEFAULTS.items():
            if key in trace and trace[key] == default:
                del trace[key]  # runs that leave these options alone keep their fingerprint
        if relevant.get("segmentation") is None:
            relevant.pop("segmentation", None)  # runs without classes keep their fingerprint
        relevant["corpus"] = corpus_digest
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

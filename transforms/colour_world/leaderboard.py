"""Which maps make the best labels: every map method against the truth of the shipped worlds.

``leaderboard(worlds, per_prompt)`` generates ``per_prompt`` images of each of the 12 held-out
prompts per world (the same seeds for every method: tracing never changes an image) and scores,
on the same images:

- **DAAM** (the project's global maps: every traced layer, every step, mean over heads) and its
  **layer groups** (UNet worlds: the 16x16 layers, the 8x8 layers, the down path, the up path;
  the DiT world: the double-stream blocks, the single-stream blocks) and **step bins** (the 20
  steps in 4 bins, early = noisiest first), all from one run that traced every layer with time
  bins (``HeatMapStore.subset_maps``); **head max** (max instead of mean over heads) and, on
  joint attention, **text keys** (the softmax renormalised over text keys);
- **DAAM + refinement** (the self-attention world only): Dataset Diffusion's ``A^τ · M`` at each
  self-attention factor and power τ;
- **ConceptAttention** (joint attention only): concepts = the prompt's content words (colours and
  shapes compete) and = the class names only (what ``--label-maps concept`` uses); and the
  paper's **cross-attention baseline** (image queries · concept keys) on both;
- every row's label maps at each **label threshold** of a scan (the min-max class score);
- baselines: the whole image, the best centre disc.

Measures per row: ``colour_miou`` (each colour word's map, bicubic to 32x32, ``> 0.4·max``,
against its object, on colour-correct images: ``evaluate``'s measure) and ``pseudo_mask_miou``
(the run's ``--classes colours`` label rule on that method's maps against the pixels' labels,
background included, on every image). ``choose_defaults`` reads the table into the ``run
--classes`` defaults per family (``model_family.LABEL_DEFAULTS``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from transforms.attribution.architectures import architecture_of
from transforms.attribution.class_maps import segment_sample
from transforms.attribution.config import (
    IGNORE_LOW,
    LABEL_THRESHOLD,
    ConceptConfig,
    GenerationConfig,
    SegmentationConfig,
    TraceConfig,
)
from transforms.attribution.classes import ClassMatch
from transforms.attribution.generate import TracedSample, concept_class_maps, generate_traced, prompt_classes
from transforms.attribution.heatmap import GlobalHeatMap
from transforms.attribution.store import HeatMapStore

from .evaluate import STEPS, TAU, centre_disc, check_image, iou, upsampled
from .scenes import HELD_OUT_PROMPTS, RESOLUTION, ScenePrompt
from .segmentation_data import colour_vocabulary, label_miou, truth_labels

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = LABEL_THRESHOLD
TIME_BINS = 4
REFINE_POWERS = (1, 2, 4, 8)
LABEL_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # the scan of --label-threshold
ALL = "all"


@dataclass(frozen=True)
class LayerGroup:
    """A named subset of the traced layers: ``keeps(name, kind, factor)``."""

    name: str
    keeps: Callable[[str, str, int], bool]


UNET_GROUPS = (
    LayerGroup("16x16", lambda name, kind, factor: factor == 1),
    LayerGroup("8x8", lambda name, kind, factor: factor == 2),
    LayerGroup("down", lambda name, kind, factor: name.startswith("down")),
    LayerGroup("up", lambda name, kind, factor: name.startswith("up")),
)
JOINT_GROUPS = (
    LayerGroup("double", lambda name, kind, factor: kind in ("double", "joint")),
    LayerGroup("single", lambda name, kind, factor: kind == "single"),
)


@dataclass
class Tally:
    """One row's running scores: colour-word IoUs, and label maps per label threshold with the
    truths they are scored against."""

    colour: list[float] = field(default_factory=list)
    labels: dict[float, list[np.ndarray]] = field(default_factory=dict)
    truths: list[np.ndarray] = field(default_factory=list)

    def add_labels(self, sample: TracedSample, label_maps: Callable[[float], np.ndarray]) -> None:
        """Label maps of one sample at every ``LABEL_THRESHOLDS`` threshold, and its truth."""
        for threshold in LABEL_THRESHOLDS:
            self.labels.setdefault(threshold, []).append(label_maps(threshold))
        self.truths.append(truth_labels(sample.image))

    def row(self, **keys: Any) -> dict[str, Any]:
        truths = np.stack(self.truths) if self.truths else None
        by_threshold = {
            t: float(label_miou(np.stack(maps), truths)["background_included"]["mean_iou"]) for t, maps in self.labels.items()
        }
        best = max(by_threshold, key=by_threshold.get) if by_threshold else None
        return {
            **keys,
            "colour_miou": float(np.nanmean(self.colour)) if self.colour else math.nan,
            # at the run's default label threshold, and at the best one of the scan
            "pseudo_mask_miou": by_threshold.get(DEFAULT_THRESHOLD, math.nan),
            "best_threshold": best,
            "pseudo_mask_miou_best": by_threshold[best] if best is not None else math.nan,
            "pseudo_mask_miou_by_threshold": {str(t): v for t, v in by_threshold.items()},
            "objects": len(self.colour),
        }


@dataclass
class WorldScore:
    """The rows of one world, keyed by (method, layers, steps)."""

    tallies: dict[tuple[str, str, str], Tally] = field(default_factory=dict)
    images: int = 0
    correct: int = 0

    def tally(self, method: str, layers: str = ALL, steps: str = ALL) -> Tally:
        return self.tallies.setdefault((method, layers, steps), Tally())

    def rows(self) -> list[dict[str, Any]]:
        return [t.row(method=m, layers=layer, steps=s) for (m, layer, s), t in self.tallies.items()]


def _objects(sample: TracedSample, prompt: ScenePrompt) -> list[tuple[str, np.ndarray]] | None:
    """(colour word, true mask) of both objects of a colour-correct image, else ``None``."""
    _, correct, truths = check_image(sample.image, prompt)
    return [(prompt.colours[k], truths[k]) for k in (0, 1)] if correct else None


def _colour_ious(maps: Callable[[str], torch.Tensor], objects: Sequence[tuple[str, np.ndarray]], tau: float) -> list[float]:
    out = []
    for colour, truth in objects:
        heat = upsampled(maps(colour))
        out.append(iou(heat > tau * heat.max(), truth))
    return out


def _labels(sample: TracedSample, matches: list[ClassMatch], token_maps: torch.Tensor, threshold: float,
            given: torch.Tensor | None = None) -> np.ndarray:
    """The ``--classes colours`` label map of a sample from other maps (the rule of the run)."""
    segmentation = segment_sample(sample.heat_map.prompt.prompt, matches, token_maps, (RESOLUTION, RESOLUTION),
                                  threshold, min(threshold, IGNORE_LOW), given=given)
    return np.asarray(segmentation.label_map, dtype=np.uint8)


def _score_maps(tally: Tally, sample: TracedSample, matches: list[ClassMatch], objects: list | None,
                heat_map: GlobalHeatMap, tau: float) -> None:
    """Score DAAM-style global maps of one sample into ``tally``."""
    if objects is not None:
        tally.colour.extend(_colour_ious(heat_map.word_map, objects, tau))
    tally.add_labels(sample, lambda t: _labels(sample, matches, heat_map.token_maps, t))


def _layer_names(pipe: Any, store: HeatMapStore, groups: Sequence[LayerGroup]) -> dict[str, list[str]]:
    architecture = architecture_of(pipe)
    kinds = architecture.traced_modules(architecture.denoiser(pipe))
    return {
        g.name: [n for n in store.sums if g.keeps(n.removesuffix(".processor"), kinds.get(n, ""), store.factors[n])]
        for g in groups
    }


def _bin_label(bounds: tuple[int, int]) -> str:
    return f"{bounds[0]}-{bounds[1]}"


def score_world(pipe: Any, prompts: Sequence[ScenePrompt] = HELD_OUT_PROMPTS, per_prompt: int = 24,
                seed: int = 1000, batch: int = 24, tau: float = TAU, steps: int = STEPS) -> WorldScore:
    """Every method's rows on one world (see the module docstring)."""
    architecture = architecture_of(pipe)
    joint = architecture.name in ("flux", "sd3")
    groups = JOINT_GROUPS if joint else UNET_GROUPS
    refine_factors = sorted({f for f in _self_attention_factors(pipe)})
    plain = SegmentationConfig(colour_vocabulary(), refine=False)
    base = GenerationConfig(steps=steps, guidance_scale=1.0, images_per_prompt=per_prompt)
    score = WorldScore()
    disc = centre_disc()
    prompts = list(prompts)
    chunk_size = max(1, batch // per_prompt)
    for start in range(0, len(prompts), chunk_size):
        chunk = prompts[start : start + chunk_size]
        texts, seeds = [p.text for p in chunk], [seed + start + i for i in range(len(chunk))]
        trace = TraceConfig(layers="all", per_timestep=TIME_BINS)
        store = HeatMapStore(trace)
        # no segmentation here, so the concepts are each prompt's content words (shapes compete)
        main = replace(base, trace=trace, concepts=ConceptConfig() if joint else None)
        samples = generate_traced(pipe, texts, seeds, main, store=store)
        matched = [prompt_classes(architecture, pipe, text, plain)[1] for text in texts]
        matches = [matched[s.prompt_index] for s in samples]
        objects = [_objects(s, chunk[s.prompt_index]) for s in samples]
        score.images += len(samples)
        score.correct += sum(o is not None for o in objects)
        names = _layer_names(pipe, store, groups)
        bins = trace.step_bins(steps)
        selections = [(g, ALL, names[g], None) for g in names if names[g]]
        selections += [(ALL, _bin_label(b), None, [k]) for k, b in enumerate(bins)]
        subsets = {(layers, when): store.subset_maps(chosen, picked) for layers, when, chosen, picked in selections}
        for i, sample in enumerate(samples):
            rows = slice(0, len(sample.heat_map.maps))
            _score_maps(score.tally("DAAM"), sample, matches[i], objects[i], sample.heat_map, tau)
            for (layers, when), maps in subsets.items():
                heat = GlobalHeatMap(sample.heat_map.tokenizer, sample.heat_map.prompt, maps[i, rows], sample.heat_map.prefix)
                _score_maps(score.tally("DAAM", layers, when), sample, matches[i], objects[i], heat, tau)
            if objects[i] is not None:
                for name, mask in (("baseline: whole image", np.ones_like(disc)), ("baseline: centre disc", disc)):
                    score.tally(name).colour.extend(iou(mask, truth) for _, truth in objects[i])
            if joint:
                _score_concepts(score.tally("ConceptAttention, content words"), sample, matches[i], objects[i], tau)
        _score_variants(pipe, score, texts, seeds, base, matches, objects, tau, joint, refine_factors)
        logger.info("leaderboard: %d/%d prompts scored", min(start + chunk_size, len(prompts)), len(prompts))
    return score


def _score_concepts(tally: Tally, sample: TracedSample, matches: list[ClassMatch], objects: list | None,
                    tau: float) -> None:
    """ConceptAttention maps of a sample traced with concepts (content words)."""
    names = sample.concepts or []
    maps = sample.concept_maps
    if objects is not None and maps is not None:
        tally.colour.extend(_colour_ious(lambda word: maps[names.index(word)], objects, tau))
    given = concept_class_maps(sample, matches)
    tally.add_labels(sample, lambda t: _labels(sample, matches, sample.heat_map.token_maps, t, given=given))


def _score_variants(pipe: Any, score: WorldScore, texts: list[str], seeds: list[int], base: GenerationConfig,
                    matches: list, objects: list, tau: float, joint: bool, refine_factors: list[int]) -> None:
    """The methods that need a run of their own: head max, text keys, concept labels, refinement."""
    vocabulary = colour_vocabulary()
    runs: list[tuple[str, GenerationConfig, SegmentationConfig | None]] = [
        ("DAAM, head max", replace(base, trace=TraceConfig(layers="all", heads="max")),
         SegmentationConfig(vocabulary, refine=False)),
    ]
    if joint:
        runs.append(("DAAM, text keys", replace(base, trace=TraceConfig(layers="all", joint_normalize="text")),
                     SegmentationConfig(vocabulary, refine=False)))
        runs.append(("ConceptAttention, class names", replace(base, trace=TraceConfig(layers="all")),
                     SegmentationConfig(vocabulary, refine=False, label_maps="concept")))
        baseline = replace(base, trace=TraceConfig(layers="all"), concepts=ConceptConfig(space="cross-attention"))
        runs.append(("paper's cross-attention baseline, class names", baseline,
                     SegmentationConfig(vocabulary, refine=False, label_maps="concept")))
        runs.append(("paper's cross-attention baseline, content words", baseline, None))
    for factor in refine_factors:
        for power in REFINE_POWERS:
            runs.append((f"DAAM + refine (factor {factor}, power {power})", replace(base, trace=TraceConfig(layers="all")),
                         SegmentationConfig(vocabulary, refine=True, refine_factor=factor, power=power)))
    for method, config, segmentation in runs:
        samples = generate_traced(pipe, texts, seeds, config, segmentation=segmentation)
        tally = score.tally(method)
        for i, sample in enumerate(samples):
            seg = sample.segmentation
            if segmentation is None:  # concepts = the content words
                _score_concepts(tally, sample, matches[i], objects[i], tau)
                continue
            if method.startswith("DAAM,"):
                _score_maps(tally, sample, matches[i], objects[i], sample.heat_map, tau)
                continue
            # refined or concept class maps: colour i's map is its class map; labels from them alone
            by_name = {vocabulary.names[label - 1]: k for k, label in enumerate(seg.labels)}
            maps = torch.from_numpy(seg.class_maps)
            if objects[i] is not None:
                tally.colour.extend(_colour_ious(lambda word: maps[by_name[word]], objects[i], tau))
            tally.add_labels(sample, lambda t: _labels(sample, matches[i], sample.heat_map.token_maps, t, given=maps))


def _self_attention_factors(pipe: Any) -> list[int]:
    """The latent factors of the denoiser's self-attention layers (none: no refinement rows)."""
    from transforms.attribution.affinity import self_attention_names

    architecture = architecture_of(pipe)
    if architecture.name in ("flux", "sd3"):
        return []
    return sorted({f for f in self_attention_names(architecture.denoiser(pipe)).values() if f is not None})


def leaderboard(pipes: dict[str, Any], per_prompt: int = 24, seed: int = 1000, batch: int = 24) -> dict[str, Any]:
    """Score every world of ``pipes`` (name -> pipeline); the JSON-ready table with defaults."""
    worlds = {}
    for name, pipe in pipes.items():
        started = time.time()
        score = score_world(pipe, per_prompt=per_prompt, seed=seed, batch=batch)
        worlds[name] = {
            "family": architecture_of(pipe).name,
            "images": score.images,
            "colour_correct": score.correct / score.images if score.images else math.nan,
            "seconds": round(time.time() - started, 1),
            "rows": score.rows(),
        }
        logger.info("leaderboard: %s scored in %.0f s", name, time.time() - started)
    return json_ready({"per_prompt": per_prompt, "seed": seed, "tau": TAU, "steps": STEPS, "worlds": worlds,
                       "defaults": choose_defaults(worlds)})


def json_ready(value: Any) -> Any:
    """``value`` with NaN as ``None`` (strict JSON) and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _best(rows: list[dict[str, Any]], measure: str, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    chosen = [r for r in rows if keep(r) and not math.isnan(r[measure])]
    return max(chosen, key=lambda r: r[measure]) if chosen else None


def _row(rows: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and r["layers"] == ALL and r["steps"] == ALL), None)


def choose_defaults(worlds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best label recipe of each world by pseudo-mask mIoU (the labels users train on), over
    the recipes ``run --classes`` offers (every layer and step): plain DAAM, DAAM + refinement
    at a factor and power, ConceptAttention of the class names, each at its best label
    threshold; beside it, the plain DAAM score at the default threshold for reference."""
    out: dict[str, dict[str, Any]] = {}
    for name, world in worlds.items():
        rows = [r for r in world["rows"] if r["layers"] == ALL and r["steps"] == ALL]
        daam = next((r for r in rows if r["method"] == "DAAM"), None)
        offered = [r for r in rows if r["method"] == "DAAM" or r["method"].startswith(("DAAM + refine", "ConceptAttention, class"))]
        best = max((r for r in offered if not math.isnan(r["pseudo_mask_miou_best"])),
                   key=lambda r: r["pseudo_mask_miou_best"], default=None)
        if daam is None or best is None:
            continue
        choice: dict[str, Any] = {
            "method": best["method"],
            "label_maps": "concept" if best["method"].startswith("ConceptAttention") else "daam",
            "refine": best["method"].startswith("DAAM + refine"),
            "label_threshold": best["best_threshold"],
            "pseudo_mask_miou": best["pseudo_mask_miou_best"],
            "daam_pseudo_mask_miou_at_default": daam["pseudo_mask_miou"],
        }
        if choice["refine"]:
            factor, power = (int(v) for v in re.findall(r"\d+", best["method"]))
            choice.update(refine_factor=factor, refine_power=power)
        out[name] = choice
    return out

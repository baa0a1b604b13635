"""Batched, traced text-to-image generation: B prompts per UNet call, maps kept apart per image."""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .affinity import AffinityStore
from .architectures import Architecture, architecture_of
from .class_maps import SampleSegmentation, segment_sample
from .classes import ClassMatch, append_class_prompt, class_token_rows, match_classes
from .concepts import ConceptRecorder, concept_names, concept_tokens, encode_concepts
from .config import ConceptConfig, GenerationConfig, SegmentationConfig
from .heatmap import GlobalHeatMap
from .store import HeatMapStore
from .tracer import CrossAttentionTracer
from .words import TokenizedPrompt

SEED_MODULUS = 2**63


@dataclass
class TracedSample:
    """One generated image (float32 ``(H, W, 3)`` in [0, 1]) with its DAAM global map and, with
    ``TraceConfig.per_timestep`` ``K``, its per-bin token maps ``(K, n_tokens, h, w)`` float32
    (bin ``k`` aggregated like the global map, over that bin's steps only)."""

    prompt_index: int
    image_index: int
    seed: int
    image: np.ndarray
    heat_map: GlobalHeatMap
    segmentation: SampleSegmentation | None = None
    timestep_maps: torch.Tensor | None = None
    concepts: list[str] | None = None  # with GenerationConfig.concepts: the concept names ...
    concept_maps: torch.Tensor | None = None  # ... and their ConceptAttention maps (len(concepts), h, w)

    def pil_image(self) -> Any:
        """The image as an 8-bit RGB ``PIL.Image`` (diffusers' rounding)."""
        from PIL import Image

        return Image.fromarray((self.image * 255).round().astype("uint8"))


def image_seed(seed: int, image_index: int) -> int:
    """Generator seed of the ``image_index``-th image of a prompt whose seed is ``seed``.

    Image 0 uses the prompt's seed; later images use a hash of (seed, index), so that image 1
    of one prompt never shares noise with image 0 of the prompt seeded ``seed + 1``.
    """
    if image_index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{image_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def image_size(pipe: Any, config: GenerationConfig) -> tuple[int, int]:
    """(height, width) in pixels: the configured size or the model's default."""
    height, width = architecture_of(pipe).default_size(pipe)
    return config.height or height, config.width or width


def check_inputs(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    """Validate a batch before any model work."""
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt")
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is empty or not a string: {prompt!r}")
    for i, seed in enumerate(seeds):
        if not 0 <= int(seed) < SEED_MODULUS:
            raise ValueError(f"seed {i} = {seed} is outside [0, 2**63)")


def prompt_classes(
    architecture: Architecture, pipe: Any, prompt: str, segmentation: SegmentationConfig
) -> tuple[TokenizedPrompt, list[ClassMatch]]:
    """The prompt as generated, tokenised, and the classes it names: with ``append_class_prompt``
    the distinct matched names are appended (``classes.append_class_prompt``) and matched again."""
    tokenized = architecture.tokenize(pipe, prompt)
    matches = _matches(tokenized, segmentation)
    if segmentation.append_class_prompt and matches:
        names = list(dict.fromkeys(m.name for m in matches))
        tokenized = architecture.tokenize(pipe, append_class_prompt(prompt, names))
        matches = _matches(tokenized, segmentation)
    return tokenized, matches


def _matches(tokenized: TokenizedPrompt, segmentation: SegmentationConfig) -> list[ClassMatch]:
    words = [{"word": w.word, "start": w.start, "end": w.end} for w in tokenized.words]
    return match_classes(words, segmentation.vocabulary, tokenized.tokens)


def step_callback(pipe: Any, store: HeatMapStore) -> dict[str, Any]:
    """The pipeline argument that advances ``store`` after every denoising step:
    ``callback_on_step_end`` where the pipeline has it, else the older ``callback`` (PixArt, whose
    ``**kwargs`` would swallow the newer one silently)."""
    def on_step_end(_pipe: Any, _step: int, _timestep: Any, tensors: dict) -> dict:
        store.next_step()
        return tensors

    # every ``__call__`` up the class chain: a subclass may pass its arguments on as ``**kwargs``
    calls = [cls.__dict__["__call__"] for cls in type(pipe).__mro__ if "__call__" in cls.__dict__]
    names = {name for call in calls for name in inspect.signature(call).parameters}
    if "callback_on_step_end" in names:
        return {"callback_on_step_end": on_step_end}
    if "callback" in names:
        return {"callback": lambda *_: store.next_step(), "callback_steps": 1}
    raise ValueError(f"{type(pipe).__name__} takes no step callback: its denoising steps cannot be told apart")


def generate_traced(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: GenerationConfig | None = None,
    negative_prompts: Sequence[str | None] | None = None,
    segmentation: SegmentationConfig | None = None,
    store: HeatMapStore | None = None,
) -> list[TracedSample]:
    """Generate ``images_per_prompt`` images for each prompt in one batched call, with maps.

    Each image gets its own CPU ``torch.Generator`` seeded from its prompt's seed, so a prompt
    gives the same image and maps alone or inside any batch, on any device.
    Results are ordered prompt-major: prompt 0 image 0, prompt 0 image 1, prompt 1 image 0, …

    With ``segmentation`` every sample also gets a ``SampleSegmentation`` (class maps, label map,
    quality); under ``append_class_prompt`` the prompt generated (``heat_map.prompt``) has the
    matched class names appended; with ``refine`` the self-attention affinity at
    ``refine_factor`` is captured and the class maps are refined with it, on the model's device;
    with ``label_maps="concept"`` the class maps are the class names' ConceptAttention maps (the
    concepts then include every matched class name, and default to them).

    ``store``: the ``HeatMapStore`` to record into (its own ``TraceConfig`` then governs, not
    ``config.trace``), for callers that read the per-layer sums afterwards (``evaluate``).
    """
    config = config or GenerationConfig()
    check_inputs(prompts, seeds)
    groups = negative_groups(negative_prompts, config.negative_prompt, len(prompts))
    if len(groups) > 1 and store is None:
        return _generate_in_groups(pipe, prompts, seeds, config, negative_prompts, segmentation, groups)
    architecture = architecture_of(pipe)
    tokenizer = architecture.word_tokenizer(pipe)
    layout = architecture.text_layout(pipe)
    if segmentation is None:
        pairs = [(architecture.tokenize(pipe, prompt), []) for prompt in prompts]
    else:
        pairs = [prompt_classes(architecture, pipe, prompt, segmentation) for prompt in prompts]
    tokenized = [t for t, _ in pairs]
    matched: list[list[ClassMatch]] = [m for _, m in pairs]
    height, width = image_size(pipe, config)
    per_prompt = config.images_per_prompt
    generators = [
        torch.Generator("cpu").manual_seed(image_seed(int(seed), k))
        for seed in seeds
        for k in range(per_prompt)
    ]
    negatives = None
    given = [config.negative_prompt if n is None else n for n in (negative_prompts or [None] * len(prompts))]
    if any(n is not None for n in given):
        # no negative prompt anywhere: none is passed, so each pipeline does its own default (SDXL:
        # a zero negative embedding); a batch mixing both is generated in two calls (see above)
        negatives = [n or "" for n in given]

    store = HeatMapStore(config.trace) if store is None else store
    keys = layout.span([len(t.tokens) for t in tokenized])
    grid = architecture.map_grid(pipe, height, width)
    store.begin(len(generators), architecture.uses_cfg(config), grid, config.steps, keys,
                conditional_first=architecture.conditional_first)
    refining = segmentation is not None and segmentation.refine
    affinity = AffinityStore(store, segmentation.refine_factor) if refining else None
    recorder = None
    concept_labels = segmentation is not None and segmentation.label_maps == "concept"
    concepts = config.concepts or (ConceptConfig() if concept_labels else None)
    if concepts is not None:
        # before any model work: a family without double-stream blocks, a selection of none
        concepts.block_indices(len(architecture.concept_blocks(architecture.denoiser(pipe))))
        names = [prompt_concepts(concepts, t, [c.name for c in m], concept_labels) for t, m in pairs]
        table = encode_concepts(architecture, pipe, [n for prompt_names in names for n in prompt_names])
        tokens = [concept_tokens(prompt_names, table) for prompt_names in names for _ in range(per_prompt)]
        recorder = ConceptRecorder(concepts, store, architecture, tokens)

    call_prompts, call_negatives, call_per_prompt = architecture.call_prompts([t.prompt for t in tokenized], negatives,
                                                                              per_prompt)
    with CrossAttentionTracer(architecture.denoiser(pipe), store, affinity, architecture, recorder):
        output = pipe(
            prompt=call_prompts,  # by name: Flux.2's first argument is an image
            height=height,
            width=width,
            num_inference_steps=config.steps,
            num_images_per_prompt=call_per_prompt,
            generator=generators,
            output_type="np",
            **step_callback(pipe, store),
            **architecture.call_kwargs(config, call_negatives, pipe),
        )
    maps = store.global_maps()
    binned = store.timestep_maps() if store.bins else None
    affinities = None if affinity is None else affinity.affinity()
    concept_maps = None if recorder is None else recorder.maps(grid)
    samples = []
    for p, prompt in enumerate(tokenized):
        full = layout.rows(len(prompt.tokens))
        rows = slice(full.start - keys.start, full.stop - keys.start)  # the store keeps keys from keys.start
        for k in range(per_prompt):
            i = p * per_prompt + k
            heat_map = GlobalHeatMap(tokenizer, prompt, maps[i, rows], layout.prefix)
            sample = TracedSample(
                prompt_index=p,
                image_index=k,
                seed=image_seed(int(seeds[p]), k),
                image=output.images[i],
                heat_map=heat_map,
                timestep_maps=None if binned is None else binned[:, i, rows][:, layout.prefix : -1],
            )
            if recorder is not None:
                sample.concepts, sample.concept_maps = recorder.tokens[i].names, concept_maps[i]
            if segmentation is not None:
                given = concept_class_maps(sample, matched[p]) if concept_labels else None
                sample.segmentation = _segment(
                    heat_map, matched[p], (height, width), segmentation, None if affinities is None else affinities[i],
                    given,
                )
            samples.append(sample)
    return samples


def _segment(
    heat_map: GlobalHeatMap,
    matches: list[ClassMatch],
    size: tuple[int, int],
    segmentation: SegmentationConfig,
    affinity: torch.Tensor | None,
    given: torch.Tensor | None = None,
) -> SampleSegmentation:
    """One image's segmentation from its global map, or the ``given`` class maps (and affinity,
    when refining)."""
    h, w = heat_map.maps.shape[-2:]
    factor = segmentation.refine_factor
    return segment_sample(
        heat_map.prompt.prompt,
        matches,
        heat_map.token_maps,
        size,
        segmentation.threshold,
        segmentation.ignore_low,
        affinity=affinity,
        grid=(math.ceil(h / factor), math.ceil(w / factor)),
        power=segmentation.power,
        given=given,
    )


def prompt_concepts(concepts: ConceptConfig, tokenized: TokenizedPrompt, class_names: Sequence[str],
                    labels: bool) -> list[str]:
    """A prompt's concept names; for concept label maps every matched class name is among them
    (after a ``--concepts`` list, which then adds competitors such as ``background``)."""
    names = concept_names(concepts, tokenized, class_names)
    if labels:
        names += [n for n in dict.fromkeys(class_names) if n not in names]
    return names


def concept_class_maps(sample: TracedSample, matches: Sequence[ClassMatch]) -> torch.Tensor:
    """The class maps ``(K, h, w)`` of ``matches`` (label order of ``class_token_rows``) from
    the sample's concept maps: each class's concept row."""
    rows = class_token_rows(matches)
    by_label = {m.label: m.name for m in matches}
    if sample.concepts is None or sample.concept_maps is None:
        raise RuntimeError("concept label maps need the sample's concept maps")
    maps = sample.concept_maps
    if not rows:
        return maps.new_zeros((0, *maps.shape[-2:]))
    return torch.stack([maps[sample.concepts.index(by_label[label])] for label in rows])


def negative_groups(negative_prompts: Sequence[str | None] | None, default: str | None, n: int) -> list[list[int]]:
    """The prompt indices generated together: prompts without a negative prompt apart from those
    with one, so each gets what the pipeline's own call gives it (SDXL's zero negative embedding
    is only used when no negative prompt is passed at all), whatever batch it is in."""
    if negative_prompts is None or default is not None:
        return [list(range(n))]
    without = [i for i, neg in enumerate(negative_prompts) if neg is None]
    with_one = [i for i, neg in enumerate(negative_prompts) if neg is not None]
    return [g for g in (without, with_one) if g]


def _generate_in_groups(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], config: GenerationConfig,
                        negative_prompts: Sequence[str | None] | None, segmentation: SegmentationConfig | None,
                        groups: list[list[int]]) -> list[TracedSample]:
    """``generate_traced`` of each group, the samples back in prompt-major order of ``prompts``."""
    negatives = list(negative_prompts or [None] * len(prompts))
    samples: dict[int, list[TracedSample]] = {}
    for group in groups:
        part = generate_traced(pipe, [prompts[i] for i in group], [seeds[i] for i in group], config,
                               [negatives[i] for i in group], segmentation)
        for sample in part:
            sample.prompt_index = group[sample.prompt_index]
            samples.setdefault(sample.prompt_index, []).append(sample)
    return [sample for p in range(len(prompts)) for sample in samples[p]]

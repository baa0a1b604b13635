"""Record reference DAAM heat maps from the original implementation (daam 0.2.0).

The project's reference mode must reproduce the numbers of the original DAAM implementation
(PyPI ``daam`` 0.2.0, castorini/daam). That package pins diffusers 0.21, so this script runs ONLY in
a dedicated reference virtual environment, never in the project's own one::

    python3.11 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0
    /work/refvenv/bin/pip install "numpy<2" diffusers==0.21.2 transformers==4.30.2 \
        accelerate==0.23.0 huggingface_hub==0.17.3 ftfy spacy matplotlib scipy safetensors
    /work/refvenv/bin/pip install --no-deps daam==0.2.0

Usage (from the repository root)::

    /work/refvenv/bin/python tests/reference/make_daam_reference.py [--model PATH] [--out PATH]

``--model`` defaults to the project's built-in tiny model folder (built by
``transforms.models.tiny_sd.tiny_model_path()``: ``$DAAM_DATASETS_CACHE/tiny-sd-v1`` or
``~/.cache/daam-datasets/tiny-sd-v1``). ``--out`` defaults to ``daam_0.2.0_tiny.npz`` next to this
script; a JSON manifest with the same stem is written beside it.

Each case is generated exactly as the daam README does it (``with trace(pipe) as tc: out =
pipe(...)``, then ``tc.compute_global_heat_map()``), at 512x512 because daam 0.2.0 hard-codes a
64x64 latent grid when ``unet.config.sample_size * vae_scale_factor == 512``. Keys of the npz::

    case{i}/global          float32 (n+2, 64, 64)  heat_map.heat_maps
    case{i}/global_norm     float32 (n+2, 64, 64)  compute_global_heat_map(normalize=True).heat_maps
    case{i}/word{j}/map     float32 (64, 64)       heat_map.compute_word_heat_map(word).heatmap
    case{i}/word{j}/mask    uint8 (512, 64)        np.packbits(mask, axis=-1) of the 512x512 mask
                                                   word_map.expand_as(image, threshold=0.4)
                                                   (daam 0.2.0 has no daam.utils.expand_image;
                                                   expand_as is its image-size mask)
    case{i}/image_crop      uint8 (256, 256, 3)    np.asarray(out.images[0])[:256, :256]

The output image is stored as its top-left quarter only: the tiny model's random-weight VAE decodes
to incompressible noise (about 700 kB per full image), and the npz must stay small. The manifest
records the full image's shape, SHA-256 and per-channel mean.

Loading a model folder written by diffusers 0.42 / transformers 5 with diffusers 0.21 /
transformers 4.30 needs two workarounds (everything else only logs "config attributes ... will be
ignored" warnings for keys unknown to 0.21, e.g. ``image_encoder`` in model_index.json and
``latents_mean``/``use_quant_conv`` in the VAE config, whose values equal 0.21's fixed behaviour):

* tokenizer: transformers 5 saves only ``tokenizer.json``, while the slow ``CLIPTokenizer`` of 4.30
  needs ``vocab.json`` and ``merges.txt``; they are rebuilt from the BPE model in
  ``tokenizer.json``.
* text encoder: transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` prefix,
  which 4.30 silently ignores (it would leave every weight randomly initialised); the weights are
  loaded explicitly with the prefix restored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import daam
import diffusers
import numpy as np
import torch
import transformers
from daam import trace
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

logger = logging.getLogger("make_daam_reference")

STEPS = 4
GUIDANCE_SCALE = 7.5
HEIGHT = WIDTH = 512
MASK_THRESHOLD = 0.4
LATENT_SIDE = 64
IMAGE_CROP = 256
TEXT_MODEL_PREFIX = "text_model."


@dataclass(frozen=True)
class Case:
    """One generation: prompt, seed, the query words, and words daam must reject."""

    prompt: str
    seed: int
    words: tuple[str, ...]
    absent_words: tuple[str, ...] = ()


CASES: tuple[Case, ...] = (
    Case("a photo of a cat", 0, ("cat", "photo")),
    # repeated word ("dog" twice) and a multi-word query ("red ball")
    Case("a dog and a dog playing with a red ball", 1, ("dog", "red ball", "ball")),
    # punctuation tokens; "dog" is not a token sequence of the prompt ("hotdog</w>" is one token)
    Case("a hotdog on a plate, with mustard!", 2, ("hotdog", "plate", "mustard"), ("dog",)),
    # "armadillo" splits into two BPE tokens: "armad", "illo</w>"
    Case("an armadillo eating watermelon", 3, ("armadillo", "watermelon", "eating")),
)


def default_model_path() -> Path:
    """The built-in tiny model folder, as ``transforms.models.tiny_sd.tiny_model_path()`` places it."""
    env = os.environ.get("DAAM_DATASETS_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "daam-datasets"
    return root / "tiny-sd-v1"


def clip_tokenizer_from_tokenizer_json(folder: Path) -> CLIPTokenizer:
    """A slow ``CLIPTokenizer`` rebuilt from the BPE vocabulary and merges in ``tokenizer.json``."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    bpe = spec["model"]
    if bpe.get("type") != "BPE" or bpe.get("end_of_word_suffix") != "</w>":
        raise ValueError(f"{folder / 'tokenizer.json'} does not hold a CLIP BPE model")
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    special_names = ("bos_token", "eos_token", "pad_token", "unk_token")
    special = {k: config[k] for k in special_names if k in config}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(bpe["vocab"]), encoding="utf-8")
        # CLIPTokenizer skips the first line of merges.txt (the version header)
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=config.get("model_max_length", 77),
            **special,
        )


def unprefixed_text_encoder(folder: Path) -> bool:
    """Whether the text encoder's safetensors keys lack ``text_model.`` (transformers 5 layout)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return False
    with safe_open(str(weights), framework="pt") as fh:
        return not any(key.startswith(TEXT_MODEL_PREFIX) for key in fh.keys())


def load_text_encoder(folder: Path) -> CLIPTextModel:
    """Load ``CLIPTextModel`` weights saved without the ``text_model.`` prefix, strictly checked."""
    model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
    state = {TEXT_MODEL_PREFIX + k: v for k, v in load_file(folder / "model.safetensors").items()}
    result = model.load_state_dict(state, strict=False)
    # position_ids is a constant buffer (arange) that newer transformers no longer serialise
    missing = set(result.missing_keys) - {TEXT_MODEL_PREFIX + "embeddings.position_ids"}
    if missing or result.unexpected_keys:
        raise RuntimeError(f"text encoder weights do not match: missing {sorted(missing)}, "
                           f"unexpected {sorted(result.unexpected_keys)}")
    return model.eval()


def load_pipeline(model: Path) -> tuple[StableDiffusionPipeline, list[str]]:
    """Load the pipeline in float32 on CPU; return it and the compatibility workarounds applied."""
    components: dict[str, Any] = {}
    workarounds: list[str] = []
    if not (model / "tokenizer" / "vocab.json").is_file():
        components["tokenizer"] = clip_tokenizer_from_tokenizer_json(model / "tokenizer")
        workarounds.append("tokenizer: slow CLIPTokenizer rebuilt from tokenizer/tokenizer.json "
                           "(no vocab.json/merges.txt in the folder)")
    if unprefixed_text_encoder(model / "text_encoder"):
        components["text_encoder"] = load_text_encoder(model / "text_encoder")
        workarounds.append("text_encoder: safetensors keys lack the 'text_model.' prefix; "
                           "loaded with the prefix restored")
    pipe = StableDiffusionPipeline.from_pretrained(
        model,
        safety_checker=None,
        requires_safety_checker=False,
        torch_dtype=torch.float32,
        **components,
    )
    pipe = pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if side != HEIGHT:
        raise ValueError(f"daam 0.2.0 assumes a 64x64 latent only for {HEIGHT}px models; "
                         f"{model} defaults to {side}px")
    for note in workarounds:
        logger.info("compatibility workaround: %s", note)
    return pipe, workarounds


def folder_digests(model: Path) -> dict[str, str]:
    """SHA-256 of every weight file, so the reference is tied to the exact model it came from."""
    return {
        str(path.relative_to(model)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(model.rglob("*.safetensors"))
    }


def run_case(
    pipe: StableDiffusionPipeline, case: Case, index: int, arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Generate one case under ``daam.trace``, add its arrays, and return its manifest entry."""
    prefix = f"case{index}"
    with trace(pipe) as tc:
        out = pipe(
            case.prompt,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE_SCALE,
            generator=torch.Generator("cpu").manual_seed(case.seed),
            height=HEIGHT,
            width=WIDTH,
        )
        heat_map = tc.compute_global_heat_map()
        heat_map_norm = tc.compute_global_heat_map(normalize=True)
        raw_keys = [key for key, _ in tc.all_heat_maps]
        layer_names = list(tc.layer_names)

    image = out.images[0]
    pixels = np.asarray(image, dtype=np.uint8)
    arrays[f"{prefix}/global"] = heat_map.heat_maps.numpy().astype(np.float32)
    arrays[f"{prefix}/global_norm"] = heat_map_norm.heat_maps.numpy().astype(np.float32)
    arrays[f"{prefix}/image_crop"] = pixels[:IMAGE_CROP, :IMAGE_CROP].copy()

    for j, word in enumerate(case.words):
        word_map = heat_map.compute_word_heat_map(word)
        mask = word_map.expand_as(image, threshold=MASK_THRESHOLD).numpy().astype(bool)
        arrays[f"{prefix}/word{j}/map"] = word_map.heatmap.numpy().astype(np.float32)
        arrays[f"{prefix}/word{j}/mask"] = np.packbits(mask, axis=-1)

    absent: dict[str, str] = {}
    for word in case.absent_words:
        try:
            heat_map.compute_word_heat_map(word)
        except ValueError as err:
            absent[word] = f"ValueError: {err}"
        else:
            raise RuntimeError(f"daam unexpectedly found {word!r} in {case.prompt!r}")

    return {
        "key": prefix,
        "prompt": case.prompt,
        "seed": case.seed,
        "steps": STEPS,
        "guidance_scale": GUIDANCE_SCALE,
        "height": HEIGHT,
        "width": WIDTH,
        "words": list(case.words),
        "tokens": pipe.tokenizer.tokenize(case.prompt.lower()),
        "token_ids": pipe.tokenizer(case.prompt).input_ids,
        "absent_words": absent,
        "image": {
            "shape": list(pixels.shape),
            "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "mean_rgb": [round(float(v), 4) for v in pixels.reshape(-1, 3).mean(0)],
        },
        "captured": {
            "num_maps": len(raw_keys),
            "factors": sorted({factor for factor, _, _ in raw_keys}),
            "layers": layer_names,
        },
    }


def check_case(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Sanity-check one case's arrays; raise ``ValueError`` on anything implausible."""
    prefix = entry["key"]
    rows = len(entry["tokens"]) + 2
    problems: list[str] = []
    for name in ("global", "global_norm"):
        maps = arrays[f"{prefix}/{name}"]
        if maps.shape != (rows, LATENT_SIDE, LATENT_SIDE):
            problems.append(f"{name} shape {maps.shape}")
        if not np.isfinite(maps).all() or (maps < 0).any():
            problems.append(f"{name} not finite and non-negative")
    prompt_sum = arrays[f"{prefix}/global_norm"][1:-1].sum(0)
    if not np.allclose(prompt_sum, 1.0, atol=1e-3):
        problems.append("normalised prompt rows do not sum to 1")
    word_maps = [arrays[f"{prefix}/word{j}/map"] for j in range(len(entry["words"]))]
    for j, word_map in enumerate(word_maps):
        if word_map.shape != (LATENT_SIDE, LATENT_SIDE) or not np.isfinite(word_map).all():
            problems.append(f"word{j} map shape {word_map.shape} or not finite")
        if any(np.array_equal(word_map, other) for other in word_maps[:j]):
            problems.append(f"word{j} map equals an earlier word map")
        mask = np.unpackbits(arrays[f"{prefix}/word{j}/mask"], axis=-1, count=WIDTH)
        if mask.shape != (HEIGHT, WIDTH) or not 0 < mask.sum() < mask.size:
            problems.append(f"word{j} mask shape {mask.shape} or empty/full")
    if entry["image"]["shape"] != [HEIGHT, WIDTH, 3]:
        problems.append(f"image shape {entry['image']['shape']}")
    if problems:
        raise ValueError(f"{prefix} ({entry['prompt']!r}): " + "; ".join(problems))


def summarise(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Log a one-line summary of the case and one line per word."""
    prefix = entry["key"]
    maps = arrays[f"{prefix}/global"]
    logger.info("%s %r: global %s max %.4g, %d maps at factors %s", prefix, entry["prompt"],
                maps.shape, maps.max(), entry["captured"]["num_maps"], entry["captured"]["factors"])
    for j, word in enumerate(entry["words"]):
        word_map = arrays[f"{prefix}/word{j}/map"]
        mask = np.unpackbits(arrays[f"{prefix}/word{j}/mask"], axis=-1, count=WIDTH)
        logger.info("  %-12s map mean %.4g max %.4g, mask covers %.1f%%",
                    word, word_map.mean(), word_map.max(), 100.0 * mask.mean())
    for word, error in entry["absent_words"].items():
        logger.info("  %-12s rejected: %s", word, error)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every case, check and save the npz and its JSON manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_path(),
                        help="StableDiffusionPipeline folder (default: the built-in tiny model)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("daam_0.2.0_tiny.npz"),
                        help="output .npz; the manifest is written next to it with a .json suffix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if not (args.model / "model_index.json").is_file():
        parser.error(f"no model at {args.model}; build the tiny model with the project venv: "
                     "python -c 'from transforms.models.tiny_sd import tiny_model_path; "
                     "tiny_model_path()'")
    torch.set_num_threads(1)
    pipe, workarounds = load_pipeline(args.model)

    arrays: dict[str, np.ndarray] = {}
    entries = []
    for index, case in enumerate(CASES):
        entry = run_case(pipe, case, index, arrays)
        check_case(entry, arrays)
        summarise(entry, arrays)
        entries.append(entry)

    manifest = {
        "description": "DAAM reference arrays from the original implementation; "
                       "see tests/reference/make_daam_reference.py",
        "versions": {
            "daam": daam.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "model": {"name": args.model.name, "sha256": folder_digests(args.model)},
        "compatibility_workarounds": workarounds,
        "device": "cpu",
        "dtype": "float32",
        "torch_num_threads": 1,
        "mask": {
            "threshold": MASK_THRESHOLD,
            "method": "daam WordHeatMap.expand_as(image, threshold=0.4): bicubic resize to the "
                      "image size, min-max normalise with +1e-8, then > threshold",
            "packing": "np.packbits(mask, axis=-1); unpack with "
                       f"np.unpackbits(x, axis=-1, count={WIDTH}).astype(bool)",
        },
        "keys": {
            "global": "case{i}/global: float32 (n+2, 64, 64), "
                      "rows = [SOS, prompt tokens, first EOS]",
            "global_norm": "case{i}/global_norm: compute_global_heat_map(normalize=True)",
            "word_map": "case{i}/word{j}/map: float32 (64, 64), word j of cases[i].words",
            "word_mask": "case{i}/word{j}/mask: packed bool mask at height x width",
            "image_crop": f"case{{i}}/image_crop: uint8 ({IMAGE_CROP}, {IMAGE_CROP}, 3), the "
                          "top-left corner of the output image (full image: cases[i].image)",
        },
        "token_ids_note": "pipe.tokenizer(prompt).input_ids: with start/end tokens, unpadded",
        "cases": entries,
    }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    manifest_path = args.out.with_suffix(".json")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    size_kb = args.out.stat().st_size / 1024
    logger.info("wrote %s (%.1f kB) and %s", args.out, size_kb, manifest_path)


if __name__ == "__main__":
    main()

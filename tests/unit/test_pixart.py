"""PixArt-Σ attribution on the tiny PixArt model: DAAM on the cross-attention DiT's ``attn2``
against a brute-force softmax with the T5 key mask, images equal to the pipeline's own call,
words read from the text the pipeline encodes, other folder shapes, the family's refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.test_sd3 import BruteForceMaps
from transforms.attribution import GenerationConfig, TraceConfig, generate_traced
from transforms.attribution.architectures import architecture_of
from transforms.attribution.architectures.pixart import PixArtArchitecture
from transforms.models.family import PIXART, check_family_settings, family_of, label_defaults
from transforms.models.loading import ModelLoadError, ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_pixart import build_tiny_pixart_pipeline

PROMPT = "A Hotdog, on a plate!"
SMALL = dict(steps=2, height=256, width=256, guidance_scale=4.5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    pipe = build_tiny_pixart_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory) -> Path:
    """A folder of another shape: 3 blocks, 2 heads, a sample size with no bin table (binning off)."""
    folder = tmp_path_factory.mktemp("pixart") / "model"
    build_tiny_pixart_pipeline(num_layers=3, heads=2, sample_size=12).save_pretrained(folder)
    return folder


class BruteForceCrossAttention(BruteForceMaps):
    """Forward hooks on each ``attn2`` that rebuild the softmax from the module's own projections
    and the additive key mask the transformer passes, in fp64, heads reduced per module (SD3's
    aggregation: ``maps``)."""

    def __init__(self, transformer: Any, names: list[str], trace: TraceConfig, cfg: bool, masked: bool = True) -> None:
        self.masked = masked
        super().__init__(transformer, names, trace, cfg)

    def _hook(self, name: str, module: Any, args: tuple, kwargs: dict) -> None:
        image = args[0] if args else kwargs["hidden_states"]
        text, bias = kwargs["encoder_hidden_states"], kwargs.get("attention_mask")

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (module.heads, -1)).transpose(1, 2).double()

        q, k = module.to_q(image), module.to_k(text)
        if getattr(module, "norm_q", None) is not None:  # QK-norms (Sana 1.5), before the head split
            q, k = module.norm_q(q), module.norm_k(k)
        q, k = split(q), split(k)
        logits = q @ k.transpose(-1, -2) * module.scale
        if self.masked and bias is not None:
            logits = logits + bias[:, None].double()  # (B, 1, K) -> every head and query
        probs = torch.softmax(logits, dim=-1)
        summed = (probs.sum(1) if self.trace.heads == "mean" else probs.amax(1)).float()  # (B, Q, K)
        if self.cfg:
            summed = summed[summed.shape[0] // 2 :]
        self.sums[name] = self.sums.get(name, 0) + summed
        self.heads[name] = module.heads if self.trace.heads == "mean" else 1


def _traced_and_brute(pipe: Any, prompts: list[str], config: GenerationConfig, masked: bool = True):
    architecture = architecture_of(pipe)
    names = sorted(architecture.traced_modules(pipe.transformer))
    brute = BruteForceCrossAttention(pipe.transformer, names, config.trace, config.uses_cfg, masked)
    try:
        samples = generate_traced(pipe, prompts, list(range(len(prompts))), config)
    finally:
        brute.remove()
    return samples, brute.maps(architecture.map_grid(pipe, config.height, config.width))


def _own(pipe: Any, prompt: str, seed: int, **kwargs: Any) -> np.ndarray:
    return pipe(prompt, generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np", **kwargs).images[0]


def test_architecture_traces_every_cross_attention(pipe):
    architecture = architecture_of(pipe)
    assert isinstance(architecture, PixArtArchitecture)
    assert architecture.traced_modules(pipe.transformer) == {
        f"transformer_blocks.{i}.attn2.processor": "cross" for i in range(2)
    }
    assert architecture.map_grid(pipe, 256, 256) == (16, 16) and architecture.default_size(pipe) == (256, 256)
    layout = architecture.text_layout(pipe)
    assert (layout.offset, layout.prefix, layout.max_tokens) == (0, 0, 299)  # Σ's 300 T5 tokens, </s> last


@pytest.mark.parametrize("guidance", [4.5, 1.0], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("heads", ["mean", "max"])
def test_maps_equal_brute_force_softmax_with_the_key_mask(pipe, guidance, heads):
    config = GenerationConfig(**{**SMALL, "guidance_scale": guidance}, trace=TraceConfig(layers="all", heads=heads))
    prompts = [PROMPT, "a cat"]
    samples, reference = _traced_and_brute(pipe, prompts, config)
    for i, sample in enumerate(samples):
        maps = sample.heat_map.maps
        n = len(sample.heat_map.prompt.tokens)
        assert maps.shape == (n + 1, 16, 16) and torch.isfinite(maps).all() and (maps >= 0).all()
        assert (reference[i, : n + 1] - maps).abs().max().item() <= 1e-5
        assert maps.amax() > (10 if heads == "mean" else 5) * maps.amin()  # peaked: real structure, not zeros


def test_the_key_mask_is_part_of_the_softmax(pipe):
    """Without the −10000 bias on padded keys the pads take most of the mass: the check can fail."""
    config = GenerationConfig(**SMALL, trace=TraceConfig(layers="all"))
    samples, unmasked = _traced_and_brute(pipe, [PROMPT], config, masked=False)
    n = len(samples[0].heat_map.prompt.tokens)
    assert (unmasked[0, : n + 1] - samples[0].heat_map.maps).abs().max().item() > 1e-2


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_images_are_the_pipelines_own_call(pipe, negative):
    check_own_call(pipe, SMALL, negative)


def check_own_call(pipe: Any, small: dict[str, Any], negative: str | None) -> None:
    """A traced image equals ``pipe(prompt, …)`` with the same arguments (no negative prompt given:
    none passed) and another seed's differs (PixArt, Sana)."""
    [sample] = generate_traced(pipe, [PROMPT], [5], GenerationConfig(**small), negative_prompts=[negative])
    given = {} if negative is None else {"negative_prompt": negative}
    call = dict(height=small["height"], width=small["width"], num_inference_steps=small["steps"],
                guidance_scale=small["guidance_scale"], **given)
    own = _own(pipe, PROMPT, 5, **call)
    np.testing.assert_allclose(sample.image, own, rtol=0, atol=1e-5)
    assert np.abs(_own(pipe, PROMPT, 6, **call) - own).max() > 1e-3


def test_words_come_from_the_text_the_pipeline_encodes(pipe):
    tokenized = architecture_of(pipe).tokenize(pipe, "  A Hotdog, on a PLATE!")
    assert tokenized.prompt == "  A Hotdog, on a PLATE!"  # the pipeline is given the prompt as written
    assert tokenized.tokens == ["a", "hot", "dog", ",", "on", "a", "plate", "!"]
    assert [w.word for w in tokenized.words] == ["a", "hotdog", ",", "on", "a", "plate", "!"]
    ids = pipe.tokenizer(pipe._text_preprocessing("  A Hotdog, on a PLATE!")[0]).input_ids
    assert tokenized.token_ids == ids[:-1]  # the keys the encoder gets, </s> after them


def test_batch_equals_single_runs(pipe):
    check_batch_equals_single_runs(pipe, GenerationConfig(**SMALL))


def check_batch_equals_single_runs(pipe: Any, config: GenerationConfig) -> None:
    """Each prompt's maps and image are the same alone and in a batch (PixArt, Sana)."""
    batch = generate_traced(pipe, [PROMPT, "a red cat"], [3, 4], config)
    for sample, prompt, seed in zip(batch, [PROMPT, "a red cat"], [3, 4]):
        [alone] = generate_traced(pipe, [prompt], [seed], config)
        torch.testing.assert_close(sample.heat_map.maps, alone.heat_map.maps, rtol=0, atol=1e-5)
        np.testing.assert_allclose(sample.image, alone.image, rtol=0, atol=1e-5)


def test_folder_of_another_shape_without_bins(other_folder):
    spec = ModelSpec(str(other_folder), device="cpu")
    assert family_of(str(other_folder)).name == PIXART
    assert model_geometry(spec, str(other_folder)) == (96, 96, 16)
    check_folder_without_bins(load_pipeline(spec), 96, 6)


def check_folder_without_bins(pipe: Any, side: int, grid: int) -> None:
    """Maps of a ``side``-pixel image on a ``grid`` square equal the brute-force softmax, and the
    image the pipeline's own call with binning off: the pipeline raises for a sample size without
    a bin table, so the run turns binning off (PixArt, Sana)."""
    config = GenerationConfig(steps=2, height=side, width=side, guidance_scale=4.5, trace=TraceConfig(layers="all"))
    samples, reference = _traced_and_brute(pipe, ["a cat on a sofa"], config)
    heat_map = samples[0].heat_map
    assert heat_map.maps.shape == (heat_map.prefix + len(heat_map.prompt.tokens) + 1, grid, grid)
    assert (reference[0, : heat_map.maps.shape[0]] - heat_map.maps).abs().max().item() <= 1e-5
    own = _own(pipe, "a cat on a sofa", 0, height=side, width=side, num_inference_steps=2, guidance_scale=4.5,
               use_resolution_binning=False)
    np.testing.assert_allclose(samples[0].image, own, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="Invalid sample size"):
        _own(pipe, "a cat", 0, height=side, width=side, num_inference_steps=1)


def test_family_refusals_are_one_line():
    source = resolve_model_source("tiny-pixart")
    family = family_of(source)
    check_family_settings(family, (256, 256), (256, 256), None, False, source=source)  # a bin size: fine
    check_family_settings(family, (192, 320), (256, 256), None, False, source=source)  # 0.6 bin of the 256 table
    with pytest.raises(ValueError, match=r"aspect-ratio bins.*--height 224 --width 288"):
        check_family_settings(family, (256, 320), (256, 256), None, False, source=source)
    with pytest.raises(ValueError, match="--no-refine"):
        check_family_settings(family, (256, 256), (256, 256), None, True, source=source)
    with pytest.raises(ValueError, match="joint-attention"):
        check_family_settings(family, (256, 256), (256, 256), None, False, concept_maps=True, source=source)
    assert label_defaults("tiny-pixart") == {"label_maps": "daam", "refine": False, "threshold": 0.5}


def test_folder_of_an_unsupported_family_names_it(tmp_path):
    folder = tmp_path / "hidream"
    folder.mkdir()
    (folder / "model_index.json").write_text(
        '{"_class_name": "HiDreamImagePipeline", "transformer": ["diffusers", "HiDreamImageTransformer2DModel"]}'
    )
    with pytest.raises(ModelLoadError, match=r"HiDreamImagePipeline is not a family .* supported: .*PixArt"):
        resolve_model_source(str(folder))


def test_pixart_alpha_folder_is_traced_with_its_own_window(tmp_path):
    """PixArt-α: the same transformer class, 120 T5 tokens, resolution/aspect micro-conditions
    when the transformer asks for them; maps and images as for Σ."""
    from diffusers import PixArtAlphaPipeline

    from transforms.models.tiny_pixart import build_pixart_components

    folder = tmp_path / "alpha"
    PixArtAlphaPipeline(**build_pixart_components(num_layers=2, heads=2)).save_pretrained(folder)
    pipe = load_pipeline(ModelSpec(str(folder), device="cpu"))
    assert type(pipe).__name__ == "PixArtAlphaPipeline" and family_of(str(folder)).name == PIXART
    assert architecture_of(pipe).text_layout(pipe).max_tokens == 119
    config = GenerationConfig(**SMALL, trace=TraceConfig(layers="all"))
    samples, reference = _traced_and_brute(pipe, [PROMPT], config)
    maps = samples[0].heat_map.maps
    assert (reference[0, : maps.shape[0]] - maps).abs().max().item() <= 1e-5
    own = _own(pipe, PROMPT, 0, height=256, width=256, num_inference_steps=2, guidance_scale=4.5)
    np.testing.assert_allclose(samples[0].image, own, rtol=0, atol=1e-5)


def test_steps_are_told_apart(pipe):
    """PixArt's pipeline takes the older ``callback``: the step ranges split the maps exactly."""
    check_steps_are_told_apart(pipe, SMALL)


def check_steps_are_told_apart(pipe: Any, small: dict[str, Any]) -> None:
    """Step ranges split a 2-step run's maps exactly; images do not depend on them (PixArt, Sana)."""
    runs = [
        generate_traced(pipe, [PROMPT], [2], GenerationConfig(**small, trace=TraceConfig(step_range=r)))[0]
        for r in (None, (0, 1), (1, None))
    ]
    whole, first, second = (s.heat_map.maps for s in runs)
    assert (whole - first - second).abs().max() <= 1e-5 and not torch.allclose(first, second)
    for sample in runs[1:]:  # recorded calls use the explicit softmax, the others the fused kernel
        np.testing.assert_allclose(sample.image, runs[0].image, rtol=0, atol=1e-5)

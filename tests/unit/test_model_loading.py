"""Model resolution: the built-in tiny model, local folders, hub ids without network."""

from __future__ import annotations

import json

import pytest

from transforms.models.loading import ModelLoadError, ModelSpec, load_pipeline, model_geometry, resolve_model_source
from transforms.models.tiny_sd import tiny_model_path


def test_tiny_model_is_cached_and_deterministic(tmp_path):
    first = tiny_model_path(tmp_path / "a")
    second = tiny_model_path(tmp_path / "b")
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (first / part).read_bytes() == (second / part).read_bytes()
    assert tiny_model_path(tmp_path / "a") == first
    assert json.loads((first / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_local_folder_loads_like_a_real_checkpoint(tmp_path):
    folder = tiny_model_path(tmp_path / "cache")
    pipe = load_pipeline(ModelSpec(str(folder), device="cpu", scheduler="euler"))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert model_geometry(ModelSpec(str(folder))) == (512, 512, 8)


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        resolve_model_source(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        resolve_model_source(str(tmp_path))


@pytest.mark.parametrize("kind", ["StableDiffusionXLImg2ImgPipeline", "StableDiffusionInpaintPipeline"])
def test_image_conditioned_folders_are_refused_before_loading(tmp_path, kind):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": kind}))
    with pytest.raises(ModelLoadError, match=f"{kind} generates from an image") as info:
        resolve_model_source(str(tmp_path))
    assert "\n" not in str(info.value)


def test_hub_id_offline_gives_one_clear_line(monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face Hub") as info:
        resolve_model_source("someorg/not-a-cached-model")
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub" in message and "--model PATH" in message
    assert "\n" not in message

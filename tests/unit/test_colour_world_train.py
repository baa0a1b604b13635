"""colour-world training: deterministic, resumable from its checkpoint, writes a loadable pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from transforms.colour_world.pipeline import ColourWorldPipeline
from transforms.colour_world.model import STUDY_BLOCK
from transforms.colour_world.train import DIFFUSERS_BLOCK, build_untrained, export_checkpoint, save_pipeline, train


def test_resume_reproduces_an_uninterrupted_run(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        whole = train(tmp_path / "whole", minutes=10, batch=4, threads=1, max_steps=4)
        train(tmp_path / "split", minutes=10, batch=4, threads=1, max_steps=2)
        split = train(tmp_path / "split", minutes=10, resume=True, batch=4, threads=1, max_steps=4)
    finally:
        torch.set_num_threads(threads)
    assert whole["steps"] == split["steps"] == 4
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["losses"] == b["losses"]
    for key in ("model", "ema"):
        for x, y in zip(a[key].values(), b[key].values()):
            assert torch.equal(x, y)
    summary = json.loads((tmp_path / "whole" / "train_summary.json").read_text())
    assert summary["steps"] == 4
    pipe = ColourWorldPipeline.from_pretrained(tmp_path / "whole" / "pipeline")
    for x, y in zip(pipe.unet.state_dict().values(), (v for k, v in a["ema"].items() if k.startswith("unet."))):
        assert torch.equal(x, y)
    assert export_checkpoint(tmp_path / "split")["from_checkpoint"]


def resnet_blocks(unet: torch.nn.Module) -> list:
    from diffusers.models.resnet import ResnetBlock2D

    return [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]


def test_training_builds_the_study_block_and_saves_it_in_the_folder(tmp_path) -> None:
    model = build_untrained()
    blocks = resnet_blocks(model.unet)
    assert len(blocks) == 6 and all(b.skip_time_act and b.norm1.eps == 1e-5 for b in blocks)
    save_pipeline(model, tmp_path / "pipe")
    config = json.loads((tmp_path / "pipe" / "unet" / "config.json").read_text())
    assert config["resnet_time_act"] is False and config["resnet_eps"] == 1e-5
    loaded = ColourWorldPipeline.from_pretrained(tmp_path / "pipe").unet
    assert all(b.skip_time_act for b in resnet_blocks(loaded))


def test_a_folder_without_the_block_options_loads_diffusers_default_block(tmp_path) -> None:
    save_pipeline(build_untrained(block=DIFFUSERS_BLOCK), tmp_path / "pipe")
    path = tmp_path / "pipe" / "unet" / "config.json"
    config = json.loads(path.read_text())
    for key in STUDY_BLOCK:
        del config[key]
    path.write_text(json.dumps(config))
    blocks = resnet_blocks(ColourWorldPipeline.from_pretrained(tmp_path / "pipe").unet)
    assert all(not b.skip_time_act and b.norm1.eps == 1e-6 for b in blocks)


def test_the_time_activation_changes_the_output() -> None:
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0.2, 0.7])
    context, mask = build_untrained().text_encoder(torch.zeros(2, 7, dtype=torch.long))
    study = build_untrained().unet(x, t, context, mask)
    default = build_untrained(block=DIFFUSERS_BLOCK).unet(x, t, context, mask)
    assert not torch.allclose(study, default)


def test_resuming_a_checkpoint_without_a_block_keeps_diffusers_default_block(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        train(tmp_path / "run", minutes=10, batch=2, threads=1, max_steps=1)
        path = tmp_path / "run" / "checkpoint.pt"
        state = torch.load(path, weights_only=False)
        assert state["block"] == STUDY_BLOCK
        del state["block"]  # as checkpoints written before the block was recorded
        torch.save(state, path)
        train(tmp_path / "run", minutes=10, resume=True, batch=2, threads=1, max_steps=2)
    finally:
        torch.set_num_threads(threads)
    assert torch.load(path, weights_only=False)["block"] == DIFFUSERS_BLOCK
    export_checkpoint(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "pipeline" / "unet" / "config.json").read_text())
    assert config["resnet_time_act"] is True


def test_learning_rate_decays_by_cosine_to_the_floor() -> None:
    from transforms.colour_world.train import LR, WARMUP, learning_rate

    decay = dict(start=1000, steps=100, final=0.01)
    assert learning_rate(0) == LR / WARMUP and learning_rate(5000) == LR == learning_rate(999, decay)
    assert learning_rate(1000, decay) == LR
    assert abs(learning_rate(1050, decay) - LR * 0.505) < 1e-12
    assert abs(learning_rate(1100, decay) - LR * 0.01) < 1e-12 and learning_rate(1100, decay) < learning_rate(1099, decay)


def test_a_decay_resumes_its_schedule_and_stops_at_its_end(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        for name in ("whole", "split"):
            train(tmp_path / name, minutes=10, batch=2, threads=1, max_steps=1)
        whole = train(tmp_path / "whole", minutes=10, resume=True, batch=2, threads=1, decay_steps=3)
        train(tmp_path / "split", minutes=10, resume=True, batch=2, threads=1, max_steps=2, decay_steps=3)
        # a resume without --decay-steps continues the checkpoint's decay
        split = train(tmp_path / "split", minutes=10, resume=True, batch=2, threads=1)
        with pytest.raises(ValueError, match="decay of 3 steps from step 1"):
            train(tmp_path / "split", minutes=10, resume=True, batch=2, threads=1, decay_steps=5)
    finally:
        torch.set_num_threads(threads)
    assert whole["steps"] == split["steps"] == 4
    assert whole["decay"] == split["decay"] == dict(start=1, steps=3, final=0.01)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["losses"] == b["losses"] and a["decay"] == b["decay"]
    for x, y in zip(a["model"].values(), b["model"].values()):
        assert torch.equal(x, y)
    assert export_checkpoint(tmp_path / "split")["decay"] == whole["decay"]

"""colour-world training: deterministic, resumable from its checkpoint, writes a loadable pipeline."""

from __future__ import annotations

import json

import torch

from transforms.colour_world.pipeline import ColourWorldPipeline
from transforms.colour_world.train import export_checkpoint, train


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

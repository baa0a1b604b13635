"""Shared fixtures: the built-in tiny model on CPU, small corpora, an in-process CLI runner and a
session-wide factory of finished outputs.

Every test run gets its own caches (the tiny model's ``DAAM_DATASETS_CACHE``, the Hugging Face
``HF_HOME``), set here before anything is imported or built, so no test reads or writes ``~/.cache``;
subprocesses started by tests inherit them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

_CACHE = Path(tempfile.mkdtemp(prefix="daam-datasets-tests-"))
os.environ["DAAM_DATASETS_CACHE"] = str(_CACHE / "daam-datasets")
os.environ["HF_HOME"] = str(_CACHE / "huggingface")

import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline.cli import main as cli_main
from transforms.models.loading import ModelSpec, load_pipeline

FAST_ARGS = ["--steps", "2", "--height", "64", "--width", "64"]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's caches."""
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny Stable Diffusion pipeline on CPU, float32, loaded once per test session."""
    torch.manual_seed(0)
    return load_pipeline(ModelSpec("tiny", device="cpu"))


@pytest.fixture
def write_corpus(tmp_path: Path) -> Callable[..., Path]:
    """Write a corpus file: a list of strings (one line each) or of dicts (JSON lines)."""

    def _write(rows: list, name: str = "prompts.txt") -> Path:
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def run_cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run ``daam-datasets`` in-process; returns (exit code, stdout, stderr)."""

    def _run(*args: str) -> tuple[int, str, str]:
        code = cli_main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


PROMPTS = [
    "a photo of a cat",
    "a dog and a dog playing with a ball",
    "an armadillo eating watermelon",
    "a bowl of fruit: apples, bananas and grapes",
    "a lighthouse on a cliff at sunset",
    "a red bicycle against a wall",
    "two horses in a snowy field",
    "a cup of coffee next to a book",
    "a sailboat on a lake",
]


CORPUS_NAME = "prompts.txt"


@pytest.fixture(scope="session")
def built_output(tmp_path_factory) -> Callable[..., Path]:
    """``build(prompts, *run_args)``: the output of ``daam-datasets run`` on a ``.txt`` corpus of
    these lines, built once per test session for each distinct (prompts, arguments). Its corpus is
    ``out.parent / CORPUS_NAME``. Tests and fixtures that change an output work on a copy
    (``copy_output``); only a module's own arguments may be changed in place."""
    built: dict[tuple[tuple[str, ...], tuple[str, ...]], Path] = {}

    def build(prompts: Sequence[str], *args: object) -> Path:
        key = (tuple(prompts), tuple(str(a) for a in args))
        if key not in built:
            root = tmp_path_factory.mktemp("output")
            (root / CORPUS_NAME).write_text("\n".join(prompts) + "\n", encoding="utf-8")
            out = root / "out"
            assert cli_main(["run", "--prompts", str(root / CORPUS_NAME), "--output", str(out), *key[1]]) == 0
            built[key] = out
        return built[key]

    return build


def copy_output(source: Path, target: Path) -> Path:
    """A private copy of an output (and its corpus beside it) at ``target``."""
    shutil.copytree(source, target)
    if (source.parent / CORPUS_NAME).exists():
        shutil.copy2(source.parent / CORPUS_NAME, target.parent / CORPUS_NAME)
    return target


# A corpus whose prompts name VOC classes every way the matcher knows (multi-word names, plurals,
# synonyms), with one prompt that names none and words that only contain a class name.
SEGMENTATION_PROMPTS = [
    "a dog sleeping on a couch",
    "two cats and a potted plant",
    "a red bicycle next to a dining table",
    "puppies playing near a sheep",
    "a caterpillar eating a hotdog",
    "a person riding a horse",
]
SEGMENTATION_ARGS = ("--classes", "voc", "--steps", "2", "--height", "64", "--width", "64", "--shard-size", "3", "--batch-size", "2")


@pytest.fixture(scope="session")
def segmentation_output(built_output) -> Path:
    """An output of ``run --classes voc`` on ``SEGMENTATION_PROMPTS`` (two shards; read-only: copy
    it with ``copy_output`` to change it)."""
    return built_output(SEGMENTATION_PROMPTS, *SEGMENTATION_ARGS)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine two OpenMP threads spin against
    other processes (12 tiny SegFormer steps measured 28 s with two threads, 0.3 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def untrained_colour_world():
    """An untrained colour-world pipeline (seeded weights), in memory."""
    from transforms.colour_world.pipeline import ColourWorldPipeline
    from transforms.colour_world.tokenizer import ColourWorldTokenizer
    from transforms.colour_world.train import build_untrained

    model = build_untrained()
    pipe = ColourWorldPipeline(model.unet, model.text_encoder, ColourWorldTokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def untrained_colour_world_folder(tmp_path_factory) -> Path:
    """The same untrained model saved as a diffusers folder (``--model PATH``)."""
    from transforms.colour_world.train import build_untrained, save_pipeline

    folder = tmp_path_factory.mktemp("colour-world") / "model"
    save_pipeline(build_untrained(), folder)
    return folder


@pytest.fixture(scope="session")
def untrained_colour_world_dit_folder(tmp_path_factory) -> Path:
    """An untrained colour-world-dit (seeded weights) saved as a diffusers folder."""
    from transforms.colour_world.train import DIT_FORM, build_untrained, save_pipeline

    folder = tmp_path_factory.mktemp("colour-world-dit") / "model"
    save_pipeline(build_untrained(block=DIT_FORM), folder)
    return folder


@pytest.fixture(scope="session")
def untrained_colour_world_sa_folder(tmp_path_factory) -> Path:
    """An untrained colour-world-sa (the UNet with self-attention) saved as a diffusers folder."""
    from transforms.colour_world.train import build_untrained, form_block, save_pipeline

    folder = tmp_path_factory.mktemp("colour-world-sa") / "model"
    save_pipeline(build_untrained(block=form_block("sa")), folder)
    return folder


def load_example(name: str) -> Any:
    """``examples/<name>.py`` imported as a module (examples are scripts, not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

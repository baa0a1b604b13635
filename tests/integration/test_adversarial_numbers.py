"""Adversarial numbers and sizes, end to end through the command line: each is refused before any
work with one exact line and exit 2, and the output folder is left as it was (or never made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST_ARGS, PROMPTS, copy_output
from transforms.models import memory

GIB = 2**30
RUN = "error: daam-datasets run: argument"


@pytest.fixture
def corpus(write_corpus) -> Path:
    return write_corpus(PROMPTS[:4])


@pytest.fixture
def fixed_device(monkeypatch) -> None:
    """A CPU with 21.3 GiB available whose attention kernels do not materialise scores, so the
    estimate line is the same on every machine."""
    monkeypatch.setattr(memory, "available_memory", lambda device: int(21.3 * GIB))
    monkeypatch.setattr(memory, "attention_materialises", lambda *args: False)


@pytest.fixture
def finished(built_output, tmp_path) -> Path:
    """A private copy of a small finished output."""
    return copy_output(built_output(PROMPTS[:2], *FAST_ARGS), tmp_path / "done" / "out")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("args, line", [
    (["--guidance-scale", "nan"], f"{RUN} --guidance-scale: expected a finite number in [0, 100], got 'nan'"),
    (["--guidance-scale=-inf"], f"{RUN} --guidance-scale: expected a finite number in [0, 100], got '-inf'"),
    (["--guidance-scale", "1e999"], f"{RUN} --guidance-scale: expected a finite number in [0, 100], got '1e999'"),
    (["--guidance-scale", "-5"], f"{RUN} --guidance-scale: expected a finite number in [0, 100], got '-5'"),
    (["--height", "60"], f"{RUN} --height: expected a multiple of 8 in [8, 65536], got '60'"),
    (["--width", "131072"], f"{RUN} --width: expected a multiple of 8 in [8, 65536], got '131072'"),
    (["--steps", "2.5"], f"{RUN} --steps: expected an integer in [1, 1000], got '2.5'"),
    (["--steps", "١٠"], f"{RUN} --steps: expected an integer in [1, 1000], got '١٠'"),
    (["--batch-size", "99999999999999999999"], f"{RUN} --batch-size: expected an integer in [1, 1024], got '99999999999999999999'"),
    (["--step-range", "5:3"], f"{RUN} --step-range: expected START:STOP, step indices with 0 <= START < STOP <= 1000 (0:10, 5:) or fractions of the steps "
     f"with 0 <= START < STOP <= 1 (0.2:0.8, :0.5), got '5:3'"),
    (["--step-range=-1:4"], f"{RUN} --step-range: expected START:STOP, step indices with 0 <= START < STOP <= 1000 (0:10, 5:) or fractions of the steps "
     f"with 0 <= START < STOP <= 1 (0.2:0.8, :0.5), got '-1:4'"),
    (["--steps", "10", "--step-range", "0:20"],
     "error: --step-range 0:20 is outside --steps 10: steps are numbered 0 to 9 (STOP exclusive, at most 10); e.g. --step-range 0:10"),
    (["--factors", "0,-2"], f"{RUN} --factors: expected comma-separated powers of two in [1, 64] (e.g. 1,2,4), got '0,-2'"),
    (["--factors", "8"], "error: --layers reference --factors 8: traces no cross-attention layer of this model "
                         "(it has cross-attention at factors 1, 2, 4, 8; --layers reference leaves out the mid block and factor 8)"),
    (["--max-failure-rate", "nan"], f"{RUN} --max-failure-rate: expected a finite number in [0, 1], got 'nan'"),
    (["--num-shards", "100000"], f"{RUN} --num-shards: expected an integer in [1, 99999], got '100000'"),
    (["--height=--"], f"{RUN} --height: expected a multiple of 8 in [8, 65536], got '--'"),
])
def test_bad_run_numbers_are_one_line_and_write_nothing(args, line, corpus, tmp_path, run_cli):
    code, out, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", *FAST_ARGS, *args)
    assert (code, out, err) == (2, "", line + "\n")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, line", [
    (["--height", "65536", "--width", "65536"],
     "error: --height 65536 --width 65536 --batch-size 4: one generation of 4 images needs about 4.95 TiB "
     "(VAE decode 3.56 TiB, UNet activations 1.74 TiB, accumulated maps 1.22 TiB) but this cpu has 21.3 GiB "
     "available; lower --height/--width or --batch-size"),
    (["--height", "2048", "--width", "2048", "--images-per-prompt", "64"],
     "error: --height 2048 --width 2048 --batch-size 4 --images-per-prompt 64: one generation of 256 images needs "
     "about 317 GiB (VAE decode 228 GiB, UNet activations 111 GiB, accumulated maps 78.2 GiB) but this cpu has "
     "21.3 GiB available; lower --height/--width or --batch-size/--images-per-prompt"),
])
def test_sizes_beyond_memory_are_refused_before_any_write(args, line, corpus, tmp_path, run_cli, fixed_device):
    code, out, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "o", "--steps", "2", *args)
    assert (code, out, err) == (2, "", line + "\n")
    assert not (tmp_path / "o").exists()


def test_refused_size_leaves_an_existing_output_untouched(finished, run_cli, fixed_device):
    before = snapshot(finished)
    code, _, err = run_cli("run", "--prompts", finished.parent / "prompts.txt", "--output", finished,
                           *FAST_ARGS, "--height", "65536", "--width", "65536")
    assert code == 2 and err.startswith("error: --height 65536 --width 65536 --batch-size 4: one generation of 2 images")
    assert snapshot(finished) == before


@pytest.mark.parametrize("args, line", [
    (["--alpha", "nan"], "argument --alpha: expected a finite number in [0, 1], got 'nan'"),
    (["--alpha", "1.5"], "argument --alpha: expected a finite number in [0, 1], got '1.5'"),
    (["--threshold=-0.1"], "argument --threshold: expected a finite number in [0, 1], got '-0.1'"),
    (["--threshold", "inf"], "argument --threshold: expected a finite number in [0, 1], got 'inf'"),
    (["--size", "100000"], "argument --size: expected an integer in [16, 4096], got '100000'"),
    (["--grid=-1"], "argument --grid: expected an integer in [0, 64], got '-1'"),
    (["--n", "1.5"], "argument --n: expected an integer in [1, 1000], got '1.5'"),
])
def test_bad_preview_numbers(args, line, finished, run_cli):
    before = snapshot(finished)
    assert run_cli("preview", finished, *args) == (2, "", f"error: daam-datasets preview: {line}\n")
    assert snapshot(finished) == before and not (finished / "preview").exists()


@pytest.mark.parametrize("args, line", [
    (["--max-commit-bytes", "nan"], "argument --max-commit-bytes: expected a finite number in [0.001, 1024], got 'nan'"),
    (["--max-commit-bytes", "inf"], "argument --max-commit-bytes: expected a finite number in [0.001, 1024], got 'inf'"),
    (["--max-commit-bytes", "0"], "argument --max-commit-bytes: expected a finite number in [0.001, 1024], got '0'"),
    (["--max-files-per-commit", "0"], "argument --max-files-per-commit: expected an integer in [1, 1000], got '0'"),
    (["--max-files-per-commit", "1e3"], "argument --max-files-per-commit: expected an integer in [1, 1000], got '1e3'"),
])
def test_bad_publish_numbers(args, line, finished, tmp_path, run_cli):
    before = snapshot(finished)
    code, out, err = run_cli("publish", finished, "--to", tmp_path / "copy", *args)
    assert (code, out, err) == (2, "", f"error: daam-datasets publish: {line}\n")
    assert snapshot(finished) == before and not (tmp_path / "copy").exists()

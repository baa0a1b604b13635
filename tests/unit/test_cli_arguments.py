"""Every numeric flag of every command, with generated values (Hypothesis): good values parse to the
same number, bad ones (nan, inf, out of range, fractions for integers, other scripts' digits, empty…)
end in exactly one ``error:`` line naming the flag, exit 2, never a traceback and never any work."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import argtypes
from pipeline.cli import build_parser, main

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JUNK = ["", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1_000", "0x10", "١٢", "１２",
        "²", "abc", "1,2", "--", "1 2", "\n", "5\x00", "9" * 5000]


@dataclass(frozen=True)
class Flag:
    """A numeric flag: its command, name, attribute, range and kind."""

    command: str
    name: str
    low: float
    high: float
    integer: bool = True
    multiple_of: int = 1
    needs: tuple[str, ...] = ()  # other arguments the flag is only valid with

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def accepts(self, value: float) -> bool:
        return self.low <= value <= self.high and (not self.integer or value % self.multiple_of == 0)


FLAGS = [
    Flag("run", "--steps", 1, 1000),
    Flag("run", "--guidance-scale", 0, 100, integer=False),
    Flag("run", "--height", 8, 65536, multiple_of=8),
    Flag("run", "--width", 8, 65536, multiple_of=8),
    Flag("run", "--seed", 0, 2**63 - 1),
    Flag("run", "--batch-size", 1, 1024),
    Flag("run", "--images-per-prompt", 1, 1024),
    Flag("run", "--shard-size", 1, 1_000_000),
    Flag("run", "--num-shards", 1, 99_999),
    Flag("run", "--limit", 1, 2**63 - 1),
    Flag("run", "--max-failure-rate", 0, 1, integer=False),
    Flag("run", "--torch-threads", 1, 1024),
    Flag("run", "--plan-workers", 1, 256),
    Flag("run", "--per-timestep", 1, 1000, needs=("--steps", "1000")),
    Flag("run", "--map-size", 1, 65536),
    Flag("run", "--refine-power", 1, 64, needs=("--classes", "voc")),
    Flag("run", "--label-threshold", 0, 1, integer=False, needs=("--classes", "voc", "--ignore-below", "0")),
    Flag("run", "--ignore-below", 0, 1, integer=False, needs=("--classes", "voc", "--label-threshold", "1")),
    Flag("preview", "--n", 1, 1000),
    Flag("preview", "--size", 16, 4096),
    Flag("preview", "--grid", 0, 64),
    Flag("preview", "--alpha", 0, 1, integer=False),
    Flag("preview", "--threshold", 0, 1, integer=False),
    Flag("publish", "--max-files-per-commit", 1, 1000),
    Flag("publish", "--max-commit-bytes", 0.001, 1024, integer=False),
    Flag("publish", "--validation-fraction", 0, 0.5, integer=False, needs=("--config", "segmentation")),
    Flag("export", "--validation-fraction", 0, 0.5, integer=False),
    Flag("evaluate", "--n", 1, 1000),
    Flag("evaluate", "--seed", 0, 2**62),
]
IDS = [f"{f.command} {f.name}" for f in FLAGS]


@pytest.fixture(scope="module")
def missing(tmp_path_factory) -> Path:
    """A folder without the corpus or output each command is pointed at."""
    return tmp_path_factory.mktemp("missing")


def prefix(command: str, missing: Path) -> list[str]:
    """Arguments that make the command stop at a missing input once its numbers are accepted."""
    return {
        "run": ["run", "--prompts", str(missing / "prompts.txt"), "--output", str(missing / "out")],
        "preview": ["preview", str(missing / "out")],
        "publish": ["publish", str(missing / "out"), "--to", str(missing / "copy"), "--dry-run"],
        "export": ["export", str(missing / "out"), "--to", str(missing / "copy")],
        "evaluate": ["evaluate", "--model", str(missing / "model")],
    }[command]


def texts(flag: Flag) -> st.SearchStrategy[str]:
    """Text for ``flag``: numbers in and around its range, written every way a user might."""
    if flag.integer:
        numbers = st.one_of(
            st.integers(int(flag.low) - 10, int(flag.low) + 10_000),
            st.integers(-(2**70), 2**70),
            st.sampled_from([int(flag.low), int(flag.high), int(flag.high) + 1, 0, -1]),
        )
        written = numbers.flatmap(lambda n: st.sampled_from([str(n), f"+{n}" if n >= 0 else str(n), f" {n} ", f"{n}.0", f"{n}e0"]))
    else:
        numbers = st.one_of(
            st.floats(flag.low - 1, flag.high + 1), st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([flag.low, flag.high, -0.0, math.nextafter(flag.high, math.inf)]),
        )
        written = numbers.flatmap(lambda x: st.sampled_from([repr(x), f"{x:e}", f"{x:.3f}", str(x).upper()]))
    return st.one_of(written, st.sampled_from(JUNK), st.text(max_size=8))


def expected(flag: Flag, text: str) -> float | None:
    """The number ``text`` means for ``flag``, or ``None`` if it must be refused."""
    stripped = text.strip(" \t")
    plain = stripped.isascii() and stripped == stripped.strip() and "_" not in stripped
    if not stripped or not plain or len(stripped) > argtypes.MAX_TEXT:
        return None
    try:
        value = int(stripped) if flag.integer else float(stripped)
    except ValueError:
        return None
    if not math.isfinite(value) or not flag.accepts(value):
        return None
    return value


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("flag", FLAGS, ids=IDS)
def test_numeric_flag_values(flag, missing, capsys):
    @SETTINGS
    @given(text=texts(flag))
    @example(text="nan")
    @example(text="-0")
    @example(text="")
    def check(text: str) -> None:
        argv = [*prefix(flag.command, missing), *flag.needs, f"{flag.name}={text}"]
        code, out, err = run_main(capsys, argv)
        assert "Traceback" not in err and out == "", err
        value = expected(flag, text)
        if value is None:
            assert code == 2, (text, err)
            assert err.startswith(f"error: daam-datasets {flag.command}: argument {flag.name}: expected "), err
            assert err.count("\n") == 1, err
        else:
            args, _ = build_parser().parse_known_args(argv)
            parsed = getattr(args, flag.dest)
            assert parsed == value and type(parsed) is (int if flag.integer else float), (text, parsed)
            assert not math.copysign(1, parsed) < 0  # -0 is read as 0
            assert flag.name not in err, err  # accepted: the command stops later, at the missing input
            assert code in (1, 2) and err.startswith("error: "), err
        assert not (missing / "out").exists() and not (missing / "copy").exists()

    check()


def test_flags_cover_every_numeric_option():
    """Every option whose type is one of ``pipeline.argtypes`` (or a bare int/float) is listed above."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    numeric = set()
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            module = getattr(action.type, "__module__", "")
            if action.type in (int, float) or module == argtypes.__name__:
                numeric.add((command, action.option_strings[0]))
    assert numeric - {(f.command, f.name) for f in FLAGS} == {("run", "--factors"), ("run", "--step-range"), ("run", "--refine-factor"),
                                                                 ("run", "--concept-blocks"), ("run", "--concept-steps"),
                                                                 ("validate", "--sample"), ("validate", "--seed")}
    assert not any(action.type in (int, float) for s in sub.choices.values() for action in s._actions)
    guarded = {(c, a.option_strings[0]) for c, s in sub.choices.items() for a in s._actions
               if a.option_strings and isinstance(a, argtypes.StoreValue)}
    assert {(f.command, f.name) for f in FLAGS} <= guarded  # --flag=-- is refused too, not stored as []


@SETTINGS
@given(items=st.lists(st.integers(-3, 130), min_size=1, max_size=5), junk=st.sampled_from(["", ",", " ", ",,"]))
@example(items=[1, 2, 4], junk="")
def test_factors(items, junk, missing, capsys):
    text = ",".join(map(str, items)) + junk
    argv = [*prefix("run", missing), f"--factors={text}"]
    code, _, err = run_main(capsys, argv)
    good = junk in ("", " ") and all(1 <= f <= 64 and not f & (f - 1) for f in items)
    if good:
        assert build_parser().parse_known_args(argv)[0].factors == tuple(dict.fromkeys(items))
        assert err == f"error: --prompts {missing / 'prompts.txt'}: no such file\n"
    else:
        assert code == 2 and err.count("\n") == 1 and "argument --factors: expected comma-separated powers of two" in err


@SETTINGS
@given(start=st.one_of(st.none(), st.integers(-5, 1005)), stop=st.one_of(st.none(), st.integers(-5, 1005)),
       steps=st.integers(1, 30))
@example(start=5, stop=3, steps=20)
@example(start=0, stop=30, steps=20)
@example(start=None, stop=None, steps=20)
def test_step_range(start, stop, steps, missing, capsys):
    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    argv = [*prefix("run", missing), f"--step-range={text}", f"--steps={steps}"]
    code, _, err = run_main(capsys, argv)
    first = 0 if start is None else start
    shape_ok = (start is not None or stop is not None) and 0 <= first < 1000 and (stop is None or first < stop <= 1000)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    if not shape_ok:
        assert "argument --step-range: expected START:STOP, step indices with 0 <= START < STOP <= 1000" in err
    elif first >= steps or (stop is not None and stop > steps):
        shown = f"{first}:{'' if stop is None else stop}"
        assert err.startswith(f"error: --step-range {shown} is outside --steps {steps}: steps are numbered 0 to {steps - 1}")
    else:
        assert build_parser().parse_known_args(argv)[0].step_range == (first, stop, False)
        assert err == f"error: --prompts {missing / 'prompts.txt'}: no such file\n"


@SETTINGS
@given(start=st.one_of(st.none(), st.integers(-5, 1005)), stop=st.one_of(st.none(), st.integers(-5, 1005)),
       junk=st.sampled_from(["", " ", "x", ":"]))
@example(start=3, stop=3, junk="")
@example(start=None, stop=None, junk="")
def test_concept_blocks(start, stop, junk, missing, capsys):
    """``--concept-blocks START:STOP``: indices ``0 <= START < STOP <= 1000``, ``STOP`` may be empty;
    anything else is one line naming the flag (whether the model has the blocks is checked later)."""
    text = f"{'' if start is None else start}:{'' if stop is None else stop}{junk}"
    argv = [*prefix("run", missing), "--concept-maps", f"--concept-blocks={text}"]
    code, _, err = run_main(capsys, argv)
    first = 0 if start is None else start
    good = (junk in ("", " ") and (start is not None or stop is not None) and 0 <= first < 1000
            and (stop is None or first < stop <= 1000))
    if good:
        assert build_parser().parse_known_args(argv)[0].concept_blocks == (first, stop)
        assert err == f"error: --prompts {missing / 'prompts.txt'}: no such file\n"
    else:
        assert code == 2 and err.count("\n") == 1 and "argument --concept-blocks: expected START:STOP" in err, err


@pytest.mark.parametrize("argv, line", [
    (["--guidance-scale", "-inf"], "error: daam-datasets run: argument --guidance-scale: expected one argument\n"),
    (["--guidance-scale", "-5"], "error: daam-datasets run: argument --guidance-scale: expected a finite number in [0, 100], got '-5'\n"),
    (["--steps", "2.5"], "error: daam-datasets run: argument --steps: expected an integer in [1, 1000], got '2.5'\n"),
    (["--seed", "9" * 100], f"error: daam-datasets run: argument --seed: expected an integer in [0, 2**63), got '{'9' * 40}…'\n"),
])
def test_space_separated_values(argv, line, missing, capsys):
    assert run_main(capsys, [*prefix("run", missing), *argv])[2] == line

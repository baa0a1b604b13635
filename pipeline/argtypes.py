"""argparse value types shared by every command: finite, bounded numbers, comma lists, ranges.

Numbers are read as plain ASCII decimal text (``12``, ``-3``, ``0.5``, ``1e-3``; surrounding spaces
are ignored): ``nan``, ``inf``, digit separators (``1_000``), digits of other scripts (``١٢``) and a
fraction where an integer is meant are refused, as is any value out of its range. A refused value
raises ``argparse.ArgumentTypeError``; the command line turns it into one line that names the flag,
e.g. ``argument --steps: expected an integer in [1, 1000], got '0'``.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Callable, NamedTuple, TypeVar

T = TypeVar("T")

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
MAX_TEXT = 64  # longer values are refused unread (no 4,000-digit integer is ever converted)
SHOWN = 40  # characters of a refused value quoted in the message
SPACES = " \t"


def shown(value: str) -> str:
    """``value`` quoted for a one-line message (escaped by ``repr``, long values cut)."""
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "…")


def refuse(description: str, value: str) -> argparse.ArgumentTypeError:
    """The error of a refused value: ``expected DESCRIPTION, got 'VALUE'``."""
    return argparse.ArgumentTypeError(f"expected {description}, got {shown(value)}")


def parse_integer(text: str) -> int | None:
    """``text`` as an integer, or ``None`` if it is not plain ASCII decimal integer text."""
    text = text.strip(SPACES)
    if len(text) > MAX_TEXT or not _INTEGER.fullmatch(text):
        return None
    return int(text)


def parse_number(text: str) -> float | None:
    """``text`` as a finite float (``-0`` read as ``0``), or ``None``."""
    text = text.strip(SPACES)
    if len(text) > MAX_TEXT or not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number + 0.0 if math.isfinite(number) else None


def value_type(description: str, read: Callable[[str], T | None]) -> Callable[[str], T]:
    """An argparse type: ``read(value)``, refused as ``expected DESCRIPTION`` when it is ``None``."""

    def parse(value: str) -> T:
        found = read(value)
        if found is None:
            raise refuse(description, value)
        return found

    parse.description = description  # type: ignore[attr-defined]  # StoreValue quotes it
    return parse


def integer(low: int, high: int, *, multiple_of: int = 1, bounds: str | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (and a multiple of ``multiple_of``); ``bounds`` overrides
    how the range is written in the message (e.g. ``[0, 2**63)``)."""
    kind = "an integer" if multiple_of == 1 else f"a multiple of {multiple_of}"

    def read(value: str) -> int | None:
        found = parse_integer(value)
        return found if found is not None and low <= found <= high and found % multiple_of == 0 else None

    return value_type(f"{kind} in {bounds or f'[{low}, {high}]'}", read)


def number(low: float, high: float) -> Callable[[str], float]:
    """A finite float in ``[low, high]``."""

    def read(value: str) -> float | None:
        found = parse_number(value)
        return found if found is not None and low <= found <= high else None

    return value_type(f"a finite number in [{low:g}, {high:g}]", read)


def power_of_two(low: int, high: int) -> Callable[[str], int]:
    """A power of two in ``[low, high]``."""

    def read(value: str) -> int | None:
        found = parse_integer(value)
        return found if found is not None and low <= found <= high and not found & (found - 1) else None

    return value_type(f"a power of two in [{low}, {high}]", read)


def comma_list(item: Callable[[str], T], description: str) -> Callable[[str], tuple[T, ...]]:
    """A comma-separated list of ``item`` values (no empty item), duplicates dropped, order kept;
    ``description`` says what the whole list must be."""

    def read(value: str) -> tuple[T, ...] | None:
        try:
            return tuple(dict.fromkeys(item(part) for part in value.split(",")))
        except argparse.ArgumentTypeError:
            return None

    return value_type(description, read)


class StepRange(NamedTuple):
    """``--step-range`` as given: step indices (``stop`` ``None``: to the end) or, with
    ``fractions``, fractions of the run's steps (resolved by ``transforms.attribution.steps``)."""

    start: int | float
    stop: int | float | None
    fractions: bool = False

    def __str__(self) -> str:
        """``0:10``, ``5:``; fractions always with a decimal point (``0.0:0.5``)."""
        shown = repr if self.fractions else str
        return f"{shown(self.start)}:{'' if self.stop is None else shown(self.stop)}"


def step_range(high: int) -> Callable[[str], StepRange]:
    """``START:STOP`` as step indices with ``0 <= START < STOP <= high`` (``START`` defaults to 0,
    an empty ``STOP`` means to the end: ``5:`` → ``(5, None)``), or as fractions of the steps
    with ``0 <= START < STOP <= 1`` when either side is written with a decimal point or exponent
    (``0.2:0.8``; ``:0.5`` → ``(0.0, 0.5)``; an empty side is 0 or 1)."""

    def read(value: str) -> StepRange | None:
        start_text, colon, stop_text = (part.strip(SPACES) for part in value.partition(":"))
        if not colon or not (start_text or stop_text):
            return None
        if all(not text or parse_integer(text) is not None for text in (start_text, stop_text)):
            start = parse_integer(start_text) if start_text else 0
            stop = parse_integer(stop_text) if stop_text else None
            within = 0 <= start < high and (stop is None or start < stop <= high)  # type: ignore[operator]
            return StepRange(start, stop) if within else None  # type: ignore[arg-type]
        first = parse_number(start_text) if start_text else 0.0
        last = parse_number(stop_text) if stop_text else 1.0
        if first is None or last is None or not 0.0 <= first < last <= 1.0:
            return None
        return StepRange(first, last, fractions=True)

    return value_type(
        f"START:STOP, step indices with 0 <= START < STOP <= {high} (0:10, 5:) or fractions of the steps "
        "with 0 <= START < STOP <= 1 (0.2:0.8, :0.5)",
        read,
    )


def index_range(high: int) -> Callable[[str], tuple[int, int | None]]:
    """``START:STOP`` as indices with ``0 <= START < STOP <= high`` (``START`` defaults to 0, an
    empty ``STOP`` means to the last: ``15:`` → ``(15, None)``)."""

    def read(value: str) -> tuple[int, int | None] | None:
        start_text, colon, stop_text = (part.strip(SPACES) for part in value.partition(":"))
        if not colon or not (start_text or stop_text):
            return None
        start = parse_integer(start_text) if start_text else 0
        stop = parse_integer(stop_text) if stop_text else None
        if start is None or (stop_text and stop is None):
            return None
        return (start, stop) if 0 <= start < high and (stop is None or start < stop <= high) else None

    return value_type(f"START:STOP, indices with 0 <= START < STOP <= {high} (15:19, 15:)", read)


class StoreValue(argparse._StoreAction):
    """argparse's store action, except that ``--flag=--`` is refused: argparse drops a lone ``--``
    value and would store an empty list without calling the flag's type."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if self.nargs is None and isinstance(values, list):
            raise argparse.ArgumentError(self, f"expected {getattr(self.type, 'description', 'a value')}, got '--'")
        super().__call__(parser, namespace, values, option_string)


def guard(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``StoreValue`` the default action of the options ``parser`` gets from now on."""
    parser.register("action", None, StoreValue)
    parser.register("action", "store", StoreValue)
    return parser

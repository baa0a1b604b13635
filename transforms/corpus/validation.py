"""One corpus row (a mapping of column → value) → the fields of a prompt, a blank, or a ``RowError``.

Rules, the same for every format:

- **prompt**: a string. Missing, null, empty or only whitespace is *blank* (counted, skipped) unless
  the row gives an id — then it is a failure, so a given id always ends as a row or a failure
  record. A prompt with no visible character (only zero-width, format, control or combining
  characters, e.g. U+200B, U+FEFF) is a failure, as is a NUL character, a lone surrogate or more
  than ``MAX_CELL_BYTES`` bytes. Anything else is kept exactly as written.
- **id**: a string or an integer. Missing, null or empty means *no id* (the row gets a content id);
  only whitespace or invisible characters, a control character, ``#`` (it marks a prompt's further
  images, ``id#1``) or another type is a failure. A given id is never changed.
- **seed**: missing, null or an empty/whitespace string means *no seed* (one is derived). An integer
  in [0, 2**63) is used; so is a number written with a fraction of zero (``5.0``, the way a
  spreadsheet or pandas writes a column with gaps) when it is exact. A bool, a fraction, NaN or
  infinity, a float too large to be exact, a number out of range or any other text is a failure.
- **negative prompt**: missing or null means none; a string is kept as written; another type is a failure.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from numbers import Integral
from typing import Any, Mapping, NamedTuple

from ..attribution.generate import SEED_MODULUS
from .records import MAX_CELL_BYTES, ColumnNames

_INVISIBLE = {"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"}
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # letters and symbols that draw nothing
_ASCII_INVISIBLE = "".join(map(chr, [*range(0x21), 0x7F]))  # controls and space
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_EXACT_FLOAT = 2**53


class RowError(ValueError):
    """A row that cannot become a prompt; ``row_id`` is its id when it gave a valid one."""

    def __init__(self, reason: str, row_id: str | None = None) -> None:
        super().__init__(reason)
        self.row_id = row_id


class PromptFields(NamedTuple):
    """A usable row: its prompt, the id and seed it gave (if any) and its negative prompt."""

    prompt: str
    id: str | None
    seed: int | None
    negative_prompt: str


def check_row(row: Mapping[str, Any], columns: ColumnNames) -> PromptFields | None:
    """The row's fields, ``None`` for a blank row, or ``RowError`` saying why it cannot be used."""
    row_id = parse_id(row.get(columns.id))
    try:
        if columns.prompt not in row:
            raise ValueError(f"missing column {columns.prompt!r} (columns: {', '.join(map(str, row))})")
        prompt = row[columns.prompt]
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            if row_id is None:
                return None
            raise ValueError("prompt is empty" if not prompt else "prompt is only whitespace")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {_show(prompt)}")
        check_text("prompt", prompt)
        if not has_visible(prompt):
            raise ValueError(f"prompt has no visible character (only {describe_chars(prompt)})")
        seed = parse_seed(row.get(columns.seed))
        negative = row.get(columns.negative_prompt)
        if negative is None:
            negative = ""
        elif not isinstance(negative, str):
            raise ValueError(f"negative prompt must be a string, got {_show(negative)}")
        elif negative:
            check_text("negative prompt", negative)
    except ValueError as error:
        raise RowError(str(error), row_id) from None
    return PromptFields(prompt, row_id, seed, negative)


def parse_id(value: Any) -> str | None:
    """A given id as a string, ``None`` for no id; ``RowError`` for an unusable one."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, Integral)):
        raise RowError(f"id must be a string or an integer, got {_show(value)}")
    text = value if isinstance(value, str) else str(int(value))
    try:
        check_text("id", text)
    except ValueError as error:
        raise RowError(str(error)) from None
    if not text.strip() or not has_visible(text):
        raise RowError(f"id has no visible character (only {describe_chars(text)}); leave it empty for a generated id")
    control = next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)
    if control is not None:
        raise RowError(f"id contains the control character {_name(control)}")
    if "#" in text:
        raise RowError(f"id {text[:80]!r} contains '#', which marks a prompt's further images (id#1)")
    return text


def parse_seed(value: Any) -> int | None:
    """A given seed, exactly; ``None`` for no seed; ``ValueError`` for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"seed must be an integer, got {_show(value)}")
    if isinstance(value, Integral):
        seed = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"seed must be a finite integer, got {value!r}")
        if not value.is_integer():
            raise ValueError(f"seed must be an integer, got {value!r}")
        if abs(value) >= _EXACT_FLOAT:
            raise ValueError(f"seed {value!r} is a float too large to be exact (2**53 or more); write it as an integer")
        seed = int(value)
    elif isinstance(value, (str, Decimal)):
        seed = _exact_integer(value)
    else:
        raise ValueError(f"seed must be an integer, got {_show(value)}")
    if not 0 <= seed < SEED_MODULUS:
        raise ValueError(f"seed {seed} is outside [0, 2**63)")
    return seed


def _exact_integer(value: str | Decimal) -> int:
    """The integer a decimal text or ``Decimal`` writes exactly (``"7"``, ``"7.0"``, ``"7e2"``)."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and not _NUMBER.fullmatch(text):
        raise ValueError(f"seed must be an integer, got {_show(value)}")
    try:
        number = Decimal(text) if text is not None else value
        if not number.is_finite() or number != number.to_integral_value():
            raise ValueError(f"seed must be an integer, got {_show(value)}")
        if not -SEED_MODULUS <= number <= SEED_MODULUS:
            raise ValueError(f"seed {value!s:.80} is outside [0, 2**63)")
        return int(number)
    except InvalidOperation:
        raise ValueError(f"seed must be an integer, got {_show(value)}") from None


def check_text(name: str, text: str) -> None:
    """``ValueError`` for a NUL character, a lone surrogate or more than ``MAX_CELL_BYTES`` bytes."""
    if "\x00" in text:
        raise ValueError(f"{name} contains a NUL character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # lone surrogates (JSON "\ud800") cannot be stored
        raise ValueError(f"{name} is not valid Unicode (lone surrogate at character {error.start})") from None
    if size > MAX_CELL_BYTES:
        raise ValueError(f"{name} is longer than {MAX_CELL_BYTES} bytes ({size})")


def plain_prompt(text: str) -> bool:
    """Whether ``text`` is, by the rules above, a prompt kept as written, decided at C speed for the
    common case: ASCII, no NUL, a visible character. ``False`` only means: ask ``check_row``."""
    return text.isascii() and "\x00" not in text and len(text) <= MAX_CELL_BYTES and has_visible(text)


def has_visible(text: str) -> bool:
    """Whether any character draws something (not whitespace, format, control, combining or filler)."""
    if text.isascii():  # the common case, at C speed
        return bool(text.lstrip(_ASCII_INVISIBLE))  # what is left starts with a visible character
    return any(ch not in _FILLERS and unicodedata.category(ch) not in _INVISIBLE and not ch.isspace() for ch in text)


def describe_chars(text: str, most: int = 3) -> str:
    """The distinct characters of an invisible text, named: ``U+200B ZERO WIDTH SPACE, U+0020 SPACE``."""
    distinct = list(dict.fromkeys(text))
    names = ", ".join(_name(ch) for ch in distinct[:most])
    return names + (f" and {len(distinct) - most} more" if len(distinct) > most else "")


def _name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def _show(value: Any) -> str:
    """A value for a message: its kind and a short repr (``number 1.5``, ``text '7a'``, ``list [1]``)."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        kind, text = "number", str(value)
    else:
        kind = "text" if isinstance(value, str) else type(value).__name__
        text = repr(value)
    return f"{kind} {text[:80]}{'…' if len(text) > 80 else ''}"

"""Safe, unique, deterministic file stems for row ids.

Row ids come from users' corpora and may hold ``/``, spaces, ``#``, any Unicode or upper case
(which case-insensitive file systems would fold). An id that is already a plain name (lower-case
ASCII letters, digits, ``_ . -``, at most 100 characters, no ``--``, not a reserved Windows
device name) is its own stem; any other id becomes ``<readable>--<hash>``: its ASCII-folded,
lower-cased characters with every run of others replaced by ``_`` (at most 64), then 16 hex
digits of ``sha256(id)``. Plain stems never contain ``--``, so the two kinds never meet; two ids
with the same stem (a 64-bit hash collision) are refused by ``ExportPlan``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_PLAIN = 100
MAX_READABLE = 64
HASH_CHARS = 16
_PLAIN = re.compile(rf"[a-z0-9][a-z0-9_.-]{{0,{MAX_PLAIN - 1}}}", re.ASCII)
_UNSAFE = re.compile(r"[^a-z0-9_.-]+", re.ASCII)
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def is_plain(row_id: str) -> bool:
    """Whether ``row_id`` is safe as a file stem on every common file system, as it is."""
    return (
        bool(_PLAIN.fullmatch(row_id))
        and "--" not in row_id
        and not row_id.endswith(".")
        and row_id.split(".", 1)[0] not in _RESERVED
    )


def file_stem(row_id: str) -> str:
    """The file stem of ``row_id`` (see the module doc)."""
    if is_plain(row_id):
        return row_id
    folded = unicodedata.normalize("NFKD", row_id).encode("ascii", "ignore").decode("ascii").lower()
    readable = _UNSAFE.sub("_", folded)[:MAX_READABLE].strip("_.-") or "id"
    digest = hashlib.sha256(row_id.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{readable}--{digest}"

"""Deterministic train/validation assignment: a row's split depends on its id alone.

A row goes to validation when a hash of its id, read as a number in [0, 1), is below the
validation fraction: the same row lands in the same split whatever the row order, the shard
plan or the other rows, and raising the fraction only moves rows from train to validation.
"""

from __future__ import annotations

import hashlib

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
_SALT = b"daam-datasets export split\0"  # keeps the split independent of other hashes of the id


def split_point(row_id: str) -> float:
    """The id's place in [0, 1): the first 8 bytes of ``sha256(salt + id)`` over 2**64."""
    digest = hashlib.sha256(_SALT + row_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(row_id: str, validation_fraction: float) -> str:
    """``validation`` for about ``validation_fraction`` of all ids, ``train`` for the rest."""
    return VALIDATION if split_point(row_id) < validation_fraction else TRAIN

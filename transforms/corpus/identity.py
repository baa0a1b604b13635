"""A prompt's id and seed when the corpus gives none: stable hashes, the same on every runner."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from ..attribution.generate import SEED_MODULUS


def derive_seed(run_seed: int, prompt_id: str) -> int:
    """Seed of a prompt without one: a hash of (run seed, id), stable across runs and runners."""
    digest = _seed_hash(run_seed).copy()
    digest.update(prompt_id.encode())
    return int.from_bytes(digest.digest(), "big") % SEED_MODULUS


@functools.lru_cache(maxsize=8)
def _seed_hash(run_seed: int) -> Any:
    """The hash of a run seed's prefix, copied for each id (the same as hashing the whole text)."""
    return hashlib.blake2b(f"{run_seed}\x00".encode(), digest_size=8)


def content_id(prompt: str, seed: int | None) -> str:
    """Id of a prompt without one: 16 hex digits of a hash of (prompt, given seed)."""
    text = f"{prompt}\x00{'' if seed is None else seed}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()

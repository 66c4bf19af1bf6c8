"""Per-item seeds: every random draw in scoring and pooling is keyed by (run seed, item, draw),
never by batch position, so results do not depend on batch size or device."""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def item_seed(base_seed: int, key: str, draw: int = 0) -> int:
    """A 63-bit seed from (base seed, item key, draw index); stable across runs and platforms."""
    digest = hashlib.sha256(f"{int(base_seed)}|{key}|{int(draw)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def item_seeds(base_seed: int, keys: Iterable[str], draw: int = 0) -> np.ndarray:
    """`item_seed` for many keys, as int64 (fits a torch.LongTensor)."""
    return np.array([item_seed(base_seed, k, draw) for k in keys], dtype=np.int64)

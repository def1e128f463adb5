"""The synthetic inputs every step uses: the same N assignments for every path.

Deterministic (seeded), made before the clock starts. Embedding ids are random version-4
UUIDs (as 16-byte values), labels uniform over k clusters, distances positive float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from eventstore import PackedEvents, pack_assignments

from .core import batches

K = 100
DIM = 384
SEED = 20240611


class Assignments(NamedTuple):
    ids: npt.NDArray[np.void]  # (n,) V16
    labels: npt.NDArray[np.uint32]
    distances: npt.NDArray[np.float32]


def assignments(n: int, *, k: int = K, seed: int = SEED) -> Assignments:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    labels = rng.integers(0, k, size=n, dtype=np.uint32)
    distances = rng.random(n, dtype=np.float32) * 2.0
    return Assignments(raw.view("V16").reshape(-1), labels, distances)


def packed_batches(data: Assignments) -> list[PackedEvents]:
    """The assignments encoded once, cut into append batches."""
    packed = pack_assignments(data.ids, data.labels, data.distances)
    return [packed.slice(lo, hi) for lo, hi in batches(packed.count)]


def payloads(data: Assignments) -> list[bytes]:
    """The same encoded payloads, one ``bytes`` per event (what a row-wise writer holds)."""
    packed = pack_assignments(data.ids, data.labels, data.distances)
    return [packed.payload(i) for i in range(packed.count)]


def embeddings(n: int, *, dim: int = DIM, k: int = K, seed: int = SEED) -> npt.NDArray[np.float32]:
    """n x dim float32 vectors around k random centres (so k-means has something to find)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim), dtype=np.float32) * 4.0
    out = rng.standard_normal((n, dim), dtype=np.float32)
    labels = rng.integers(0, k, size=n)
    for lo, hi in batches(n, 65_536):  # in chunks: no second n x dim temporary
        out[lo:hi] += centres[labels[lo:hi]]
    return out

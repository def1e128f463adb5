"""The synthetic inputs every step uses: the same N assignments on every path.

Made in batches of 100k, each from its own seed (``SEED``, batch index), so the rows are
the same whatever N and a step never holds more than one batch of input: its peak RSS
shows whether the path under test grows with N, not the size of the test data. Embedding
ids are random version-4 UUIDs (16-byte values), labels uniform over k clusters,
distances positive float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import PackedEvents, pack_assignments

from .core import BATCH, batches

K = 100
DIM = 384
SEED = 20240611


class Assignments(NamedTuple):
    lo: int  # row of the first assignment
    ids: npt.NDArray[np.void]  # (m,) V16
    labels: npt.NDArray[np.uint32]
    distances: npt.NDArray[np.float32]


def assignment_batches(n: int, *, k: int = K, seed: int = SEED) -> Iterator[Assignments]:
    """Rows 0..n-1 in batches of ``BATCH``; batch b is the same for every n."""
    for lo, hi in batches(n, BATCH):
        rng = np.random.default_rng([seed, lo // BATCH])
        raw = rng.integers(0, 256, size=(BATCH, 16), dtype=np.uint8)[: hi - lo]
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
        labels = rng.integers(0, k, size=BATCH, dtype=np.uint32)[: hi - lo]
        distances = rng.random(BATCH, dtype=np.float32)[: hi - lo] * 2.0
        yield Assignments(lo, raw.view("V16").reshape(-1), labels, distances)


def packed(batch: Assignments) -> PackedEvents:
    """A batch encoded once: canonical 29-byte payloads back to back."""
    return pack_assignments(batch.ids, batch.labels, batch.distances)


def payloads(batch: Assignments) -> list[bytes]:
    """The same encoded payloads, one ``bytes`` per event (what a row-wise writer holds)."""
    block = packed(batch)
    return [block.payload(i) for i in range(block.count)]


def embeddings(n: int, *, dim: int = DIM, k: int = K, seed: int = SEED) -> npt.NDArray[np.float32]:
    """n x dim float32 vectors around k random centres (so k-means has something to find)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim), dtype=np.float32) * 4.0
    out = rng.standard_normal((n, dim), dtype=np.float32)
    labels = rng.integers(0, k, size=n)
    for lo, hi in batches(n, 65_536):  # in chunks: no second n x dim temporary
        out[lo:hi] += centres[labels[lo:hi]]
    return out


def embedding_ids(n: int) -> npt.NDArray[np.void]:
    """The ids of rows 0..n-1 (the assignments' ids), as one array."""
    return np.concatenate([b.ids for b in assignment_batches(n)]) if n else np.empty(0, "V16")


def write_embeddings(path: str, n: int, *, dim: int = DIM, k: int = K, seed: int = SEED) -> None:
    """A ``.npy`` of n x dim float32 vectors around k random centres, as ``embeddings`` makes
    them but written a batch at a time (batch b from its own seed): the step never holds
    the whole input, as a user's file of 1M x 384 (1.5 GB) is not held either."""
    centres = np.random.default_rng(seed).standard_normal((k, dim), dtype=np.float32) * 4.0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for lo, hi in batches(n, BATCH):
        rng = np.random.default_rng([seed, lo // BATCH])
        block = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        block += centres[rng.integers(0, k, size=hi - lo)]
        out[lo:hi] = block
    out.flush()
    del out

"""Comparing two runs over the embedding ids they share: ARI, NMI, cluster overlaps.

Everything is numpy on the contingency table of the two labelings: ids (as pairs of
uint64) are sorted by a 64-bit hash and joined with ``intersect1d``, every match checked on
all 128 bits (a hash collision falls back to a lexsort join), the table is counted with
``bincount``
(or ``unique`` when it would be large and sparse), so memory is O(n + cells), never O(n^2).
The formulas follow the usual conventions (those of scikit-learn): ARI and NMI (arithmetic
normalisation, natural log) are 1.0 for two identical labelings whatever the label names.

Noise (label -1) is compared as a class of its own, as scikit-learn's scores do with the
labels they are given: two runs that call the same ids noise agree on them. ``Comparison``
says so (``noise``) and counts the shared ids each run calls noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.codec import NOISE

from ._log import PAGE_SIZE, ProgressFn, assignment_blocks, block_labels

Keys = npt.NDArray[np.uint64]  # (n, 2): an embedding id as two big-endian halves
Labels = npt.NDArray[np.int64]
DENSE_CELLS = 1 << 24  # contingency tables up to this many cells are counted densely
NOISE_POLICY = "own_class"  # how noise (-1) enters ARI, NMI and the overlaps
MATCH_CELLS = 1 << 24  # the largest table matched one to one (dense, for the Hungarian step)


@dataclass(frozen=True)
class Overlap:
    cluster_a: int
    cluster_b: int
    count: int
    share_of_a: float  # of cluster_a's shared ids, the fraction that is in cluster_b
    share_of_b: float

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_a": self.cluster_a,
            "cluster_b": self.cluster_b,
            "n_shared": self.count,
            "share_of_a": self.share_of_a,
            "share_of_b": self.share_of_b,
        }


@dataclass(frozen=True)
class Match:
    """Two clusters paired one to one by the Hungarian assignment on the contingency table
    (the pairing that maximises the embeddings the pairs share)."""

    cluster_a: int
    cluster_b: int
    shared: int
    jaccard: float  # shared / (size in A + size in B - shared), over the shared ids
    size_a: int
    size_b: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_a": self.cluster_a,
            "cluster_b": self.cluster_b,
            "jaccard": self.jaccard,
            "shared": self.shared,
            "size_a": self.size_a,
            "size_b": self.size_b,
        }


@dataclass(frozen=True)
class Comparison:
    shared: int
    only_a: int
    only_b: int
    clusters_a: int  # distinct clusters among the shared ids (noise is not a cluster)
    clusters_b: int
    ari: float | None  # None when the runs share no id
    nmi: float | None
    overlaps: list[Overlap] = field(default_factory=list)
    duplicates_a: int = 0  # ids assigned more than once in a run (the first one counts)
    duplicates_b: int = 0
    run_a: UUID | None = None
    run_b: UUID | None = None
    noise_a: int = 0  # shared ids that run a labels noise (-1)
    noise_b: int = 0
    noise: str = NOISE_POLICY
    matches: list[Match] | None = field(default_factory=list)  # None: too many clusters
    n_changed: int | None = None  # shared ids not in their cluster's match (None: unmatched)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id_a": None if self.run_a is None else str(self.run_a),
            "run_id_b": None if self.run_b is None else str(self.run_b),
            "n_shared": self.shared,
            "n_only_a": self.only_a,
            "n_only_b": self.only_b,
            "n_clusters_a": self.clusters_a,
            "n_clusters_b": self.clusters_b,
            "ari": self.ari,
            "nmi": self.nmi,
            "n_duplicates_a": self.duplicates_a,
            "n_duplicates_b": self.duplicates_b,
            "noise": self.noise,
            "n_noise_a": self.noise_a,
            "n_noise_b": self.noise_b,
            "overlaps": [o.to_json() for o in self.overlaps],
            "matches": None if self.matches is None else [m.to_json() for m in self.matches],
            "n_changed": self.n_changed,
        }


def compare_runs(
    store: EventStore,
    run_a: UUID,
    run_b: UUID,
    *,
    top: int = 10,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> Comparison:
    """Compare two runs' assignments over their shared embedding ids."""
    keys_a, labels_a = load_labels(store, run_a, page_size=page_size, on_progress=on_progress)
    keys_b, labels_b = load_labels(store, run_b, page_size=page_size, on_progress=on_progress)
    result = compare_labels(keys_a, labels_a, keys_b, labels_b, top=top)
    return replace(result, run_a=run_a, run_b=run_b)


def load_labels(
    store: EventStore,
    run_id: UUID,
    *,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> tuple[Keys, Labels]:
    """A run's (embedding id keys, clusters) in seq order; noise is -1."""
    keys: list[Keys] = []
    labels: list[Labels] = []
    for block in assignment_blocks(store, run_id, page_size=page_size, on_progress=on_progress):
        keys.append(id_keys(block.records["embedding_id"]))
        labels.append(block_labels(block.records))
    if not keys:
        return np.zeros((0, 2), dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(keys), np.concatenate(labels)


def id_keys(ids: npt.NDArray[np.void]) -> Keys:
    """16-byte ids as (n, 2) uint64: equal ids give equal rows."""
    return np.ascontiguousarray(ids).view(">u8").reshape(-1, 2).astype(np.uint64)


def id_hash(ids: npt.NDArray[np.void]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each 16-byte id (for counting matches; not a join on its own)."""
    return _hash(id_keys(ids))


def compare_labels(
    keys_a: Keys, labels_a: Labels, keys_b: Keys, labels_b: Labels, *, top: int = 10
) -> Comparison:
    """Join two labelings on their ids and compare them over the shared ids."""
    return compare_with_table(keys_a, labels_a, keys_b, labels_b, top=top)[0]


def compare_with_table(
    keys_a: Keys, labels_a: Labels, keys_b: Keys, labels_b: Labels, *, top: int = 10
) -> tuple[Comparison, Contingency | None]:
    """``compare_labels`` and the contingency table over the shared ids (None: none)."""
    try:
        if keys_a.shape == keys_b.shape and np.array_equal(keys_a, keys_b):
            # the same ids in the same order (two runs over one input): the join is the
            # identity, and one pass finds the first occurrences of both
            first_a, _, dup_a = _first_occurrences(keys_a, exact=False)
            first_b, dup_b, ia, ib = first_a, dup_a, first_a, first_a
        else:
            first_a, ha, dup_a = _first_occurrences(keys_a, exact=False)
            first_b, hb, dup_b = _first_occurrences(keys_b, exact=False)
            ia, ib = _join_hashed(keys_a, first_a, ha, keys_b, first_b, hb)
    except _HashCollision:  # two different ids with one 64-bit hash: join on all 128 bits
        first_a, _, dup_a = _first_occurrences(keys_a, exact=True)
        first_b, _, dup_b = _first_occurrences(keys_b, exact=True)
        ja, jb = _join_exact(keys_a[first_a], keys_b[first_b])
        ia, ib = first_a[ja], first_b[jb]
    shared = len(ia)
    base: dict[str, Any] = {
        "shared": shared,
        "only_a": len(first_a) - shared,
        "only_b": len(first_b) - shared,
        "duplicates_a": dup_a,
        "duplicates_b": dup_b,
    }
    if shared == 0:
        return Comparison(clusters_a=0, clusters_b=0, ari=None, nmi=None, **base), None
    la, lb = labels_a[ia], labels_b[ib]
    table = Contingency.of(la, lb)
    matches = table.matches()
    changed = None if matches is None else shared - sum(m.shared for m in matches)
    result = Comparison(
        noise_a=int(np.count_nonzero(la == NOISE)),
        noise_b=int(np.count_nonzero(lb == NOISE)),
        clusters_a=int(np.count_nonzero(table.labels_a != NOISE)),
        clusters_b=int(np.count_nonzero(table.labels_b != NOISE)),
        ari=table.adjusted_rand_index(),
        nmi=table.normalized_mutual_info(),
        overlaps=table.largest(top),
        matches=matches,
        n_changed=changed,
        **base,
    )
    return result, table


class _HashCollision(Exception):
    """Two different ids share a 64-bit hash (never seen in practice; handled exactly)."""


_MIX = np.uint64(0x9E3779B97F4A7C15)
Index = npt.NDArray[np.intp]


def _hash(keys: Keys) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each 128-bit id. Only a sort key: every match is checked on all 128
    bits, and a collision between different ids switches to the exact join."""
    return (keys[:, 0] * _MIX) ^ keys[:, 1]


def _first_occurrences(keys: Keys, *, exact: bool) -> tuple[Index, npt.NDArray[np.uint64], int]:
    """Where each id occurs first (in seq order), as indices into ``keys`` ordered by the
    sort key; that sort key of each (the hash; empty when ``exact``); how many rows repeat
    an earlier id. Only rows next to an equal hash are compared on all 128 bits."""
    if exact:
        order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal ids keep seq order
        k = keys[order]
        repeat = np.flatnonzero((k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1]))
        hashed = np.zeros(0, dtype=np.uint64)
    else:
        h = _hash(keys)
        order = np.argsort(h, kind="stable")  # equal hashes keep seq order
        hashed = h[order]
        repeat = np.flatnonzero(hashed[1:] == hashed[:-1])
        if len(repeat):
            i, j = order[repeat], order[repeat + 1]
            if not np.array_equal(keys[i], keys[j]):
                raise _HashCollision
    if not len(repeat):
        return order, hashed, 0
    first = np.ones(len(order), dtype=bool)
    first[repeat + 1] = False
    return order[first], hashed[first] if not exact else hashed, len(repeat)


def _join_hashed(
    keys_a: Keys,
    first_a: Index,
    ha: npt.NDArray[np.uint64],
    keys_b: Keys,
    first_b: Index,
    hb: npt.NDArray[np.uint64],
) -> tuple[Index, Index]:
    """Index pairs (into keys_a, keys_b) of equal ids among the first occurrences, matched
    on their hashes (sorted and unique on each side) and checked on all 128 bits."""
    if not len(ha) or not len(hb):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    pos = np.minimum(np.searchsorted(ha, hb), len(ha) - 1)
    jb = np.flatnonzero(ha[pos] == hb)
    ia, ib = first_a[pos[jb]], first_b[jb]
    if not np.array_equal(keys_a[ia], keys_b[ib]):
        raise _HashCollision
    return ia, ib


def _join_exact(ka: Keys, kb: Keys) -> tuple[Index, Index]:
    """Index pairs (into ka, kb) of equal keys; both inputs sorted and unique."""
    keys = np.concatenate([ka, kb])
    source = np.concatenate([np.zeros(len(ka), np.int8), np.ones(len(kb), np.int8)])
    index = np.concatenate([np.arange(len(ka)), np.arange(len(kb))])
    order = np.lexsort((source, keys[:, 1], keys[:, 0]))
    k, s, idx = keys[order], source[order], index[order]
    same = (k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1]) & (s[:-1] == 0) & (s[1:] == 1)
    pos = np.flatnonzero(same)
    return idx[pos], idx[pos + 1]


def _codes(values: Labels) -> tuple[Labels, Index]:
    """``np.unique(values, return_inverse=True)``, counted instead of sorted when the values
    span a small range (cluster labels do)."""
    lo, hi = int(values.min()), int(values.max())
    if hi - lo >= max(len(values), 1 << 16):
        unique, inverse = np.unique(values, return_inverse=True)
        return unique, inverse.reshape(-1)
    shifted = values - lo
    present = np.bincount(shifted, minlength=hi - lo + 1) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(values.dtype) + lo, rank[shifted]


@dataclass(frozen=True)
class Contingency:
    """The non-zero cells of the contingency table of two labelings of the same items."""

    labels_a: Labels  # distinct labels of a, sorted
    labels_b: Labels
    cell_a: npt.NDArray[np.intp]  # row (index into labels_a) of each non-zero cell
    cell_b: npt.NDArray[np.intp]
    counts: npt.NDArray[np.int64]
    sizes_a: npt.NDArray[np.int64]  # row sums
    sizes_b: npt.NDArray[np.int64]  # column sums

    @classmethod
    def of(cls, a: Labels, b: Labels) -> Contingency:
        ua, ia = _codes(a)
        ub, ib = _codes(b)
        nb = len(ub)
        codes = ia.astype(np.int64) * nb + ib
        if len(ua) * nb <= DENSE_CELLS:
            dense = np.bincount(codes, minlength=len(ua) * nb)
            cells = np.flatnonzero(dense)
            counts = dense[cells]
        else:
            cells, counts = np.unique(codes, return_counts=True)
        return cls(
            ua,
            ub,
            cells // nb,
            cells % nb,
            counts.astype(np.int64),
            np.bincount(ia, minlength=len(ua)).astype(np.int64),
            np.bincount(ib, minlength=nb).astype(np.int64),
        )

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def adjusted_rand_index(self) -> float:
        """(index - expected) / (max - expected) over pair counts, in exact integers."""
        index = _pairs(self.counts)
        sa, sb = _pairs(self.sizes_a), _pairs(self.sizes_b)
        total = self.n * (self.n - 1) // 2
        numerator = 2 * (index * total - sa * sb)
        denominator = (sa + sb) * total - 2 * sa * sb
        if denominator == 0:  # both labelings trivial (one cluster, or all singletons)
            return 1.0
        return numerator / denominator

    def normalized_mutual_info(self) -> float:
        """Mutual information over the arithmetic mean of the two entropies."""
        if len(self.counts) == len(self.labels_a) == len(self.labels_b):
            return 1.0  # one-to-one clusters (or both one cluster): the same partition
        n = self.n
        c = self.counts.astype(np.float64)
        a = self.sizes_a.astype(np.float64)[self.cell_a]
        b = self.sizes_b.astype(np.float64)[self.cell_b]
        mi = float(np.sum(c / n * (np.log(c) + math.log(n) - np.log(a) - np.log(b))))
        mi = max(mi, 0.0)
        if mi == 0.0:
            return 0.0
        normalizer = (_entropy(self.sizes_a, n) + _entropy(self.sizes_b, n)) / 2
        return min(mi / normalizer, 1.0)

    def matches(self) -> list[Match] | None:
        """Clusters of A and B paired one to one, maximising the ids the pairs share
        (``scipy.optimize.linear_sum_assignment``); noise (label -1) is a class of its own,
        paired only with noise. Ordered by cluster in A. None when the dense table would
        exceed ``MATCH_CELLS`` (thousands of clusters on both sides)."""
        if len(self.labels_a) * len(self.labels_b) > MATCH_CELLS:
            return None
        from scipy.optimize import linear_sum_assignment

        dense = dense_table(self)
        rows = np.flatnonzero(self.labels_a != NOISE)
        cols = np.flatnonzero(self.labels_b != NOISE)
        pairs: list[tuple[int, int]] = []
        if len(rows) and len(cols):
            r, c = linear_sum_assignment(dense[np.ix_(rows, cols)], maximize=True)
            pairs += [(int(rows[i]), int(cols[j])) for i, j in zip(r, c, strict=True)]
        noise_a = np.flatnonzero(self.labels_a == NOISE)
        noise_b = np.flatnonzero(self.labels_b == NOISE)
        if len(noise_a) and len(noise_b):
            pairs.append((int(noise_a[0]), int(noise_b[0])))
        out = []
        for i, j in sorted(pairs, key=lambda p: int(self.labels_a[p[0]])):
            shared = int(dense[i, j])
            sa, sb = int(self.sizes_a[i]), int(self.sizes_b[j])
            out.append(
                Match(
                    int(self.labels_a[i]),
                    int(self.labels_b[j]),
                    shared,
                    shared / (sa + sb - shared) if sa + sb - shared else 0.0,
                    sa,
                    sb,
                )
            )
        return out

    def largest(self, top: int) -> list[Overlap]:
        """The ``top`` largest cells, largest first (ties by cluster ids)."""
        ca, cb = self.labels_a[self.cell_a], self.labels_b[self.cell_b]
        order = np.lexsort((cb, ca, -self.counts))[:top]
        return [
            Overlap(
                int(ca[i]),
                int(cb[i]),
                int(self.counts[i]),
                float(self.counts[i] / self.sizes_a[self.cell_a[i]]),
                float(self.counts[i] / self.sizes_b[self.cell_b[i]]),
            )
            for i in order.tolist()
        ]


def dense_table(table: Contingency) -> npt.NDArray[np.int64]:
    """The contingency table as a dense (clusters in A) x (clusters in B) array."""
    dense = np.zeros((len(table.labels_a), len(table.labels_b)), dtype=np.int64)
    dense[table.cell_a, table.cell_b] = table.counts
    return dense


def _pairs(counts: npt.NDArray[np.int64]) -> int:
    """sum of count * (count - 1) / 2, as an exact Python int."""
    c = counts.astype(np.int64)
    return int((c * (c - 1) // 2).sum())


def _entropy(sizes: npt.NDArray[np.int64], n: int) -> float:
    p = sizes[sizes > 0].astype(np.float64) / n
    return float(-np.sum(p * np.log(p)))

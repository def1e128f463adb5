"""What is in a run's clusters: per-cluster size and distances, and the members nearest the
centroid, streamed from the log with bounded memory.

One pass over the run's assignment blocks keeps, per cluster, the count, the sum, min and
max of the distances and the ``limit`` members with the smallest distance (a bounded
selection: each block is merged into the held candidates with one ``lexsort`` and a rank
within each cluster, so at most ``clusters x limit`` candidates are ever held, as numpy
arrays, never as Python objects per row). A second pass counts each cluster's distances
into ``bins`` equal bins over [0, the largest finite distance] (the distribution charts).
Memory is O(block + clusters x (limit + bins)), whatever the size of the run.

Noise (label ``NOISE`` = -1) is a class of its own: it is counted, never a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.errors import ClusterNotFoundError

from ._log import (
    PAGE_SIZE,
    AssignmentBlock,
    ProgressFn,
    assignment_blocks,
    block_labels,
    uuid_texts,
)
from .compare import NOISE, id_hash
from .summary import summarize_run
from .texts import TextsSource, check_texts_file, load_texts

DEFAULT_LIMIT = 20
DEFAULT_BINS = 24


@dataclass(frozen=True)
class Member:
    embedding_id: str  # canonical UUID text
    distance: float
    seq: int
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "embedding_id": self.embedding_id,
            "distance": self.distance,
            "seq": self.seq,
        }
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class ClusterStats:
    cluster: int
    size: int
    mean_distance: float | None
    max_distance: float | None
    min_distance: float | None
    nearest: list[Member]
    histogram: list[int] = field(default_factory=list)  # counts in the run's bins
    n_texts_unmatched: int | None = None  # rows of a texts file that match no embedding

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "size": self.size,
            "mean_distance": self.mean_distance,
            "min_distance": self.min_distance,
            "max_distance": self.max_distance,
            "nearest": [m.to_json() for m in self.nearest],
            "n_texts_unmatched": self.n_texts_unmatched,
        }


@dataclass(frozen=True)
class RunClusters:
    run_id: UUID
    k: int
    n_assignments: int
    n_noise: int
    clusters: list[ClusterStats]  # every cluster 0 .. k-1 (empty ones too), by number
    bin_edges: list[float]  # len(bins) + 1 edges of the distance histograms
    id_hashes: npt.NDArray[np.uint64]  # 64-bit hash of every embedding id (texts matching)

    @property
    def sizes(self) -> list[int]:
        return [c.size for c in self.clusters]


# ------------------------------------------------------------------ the bounded selection


class _Nearest:
    """The ``limit`` smallest-distance members of each cluster seen so far."""

    def __init__(self, limit: int):
        self.limit = limit
        self.labels = np.zeros(0, dtype=np.int64)
        self.dist = np.zeros(0, dtype=np.float64)
        self.seqs = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype="V16")

    def add(
        self,
        labels: npt.NDArray[np.int64],
        dist: npt.NDArray[np.float64],
        seqs: npt.NDArray[np.int64],
        ids: npt.NDArray[np.void],
    ) -> None:
        if self.limit == 0 or len(labels) == 0:
            return
        lab = np.concatenate([self.labels, labels])
        d = np.concatenate([self.dist, dist])
        s = np.concatenate([self.seqs, seqs])
        i = np.concatenate([self.ids, ids])
        # NaN distances sort last; ties keep seq order
        order = np.lexsort((s, np.nan_to_num(d, nan=np.inf), lab))
        sorted_lab = lab[order]
        starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_lab)]))
        keep = order[(np.arange(len(sorted_lab)) - group_start) < self.limit]
        self.labels, self.dist, self.seqs, self.ids = lab[keep], d[keep], s[keep], i[keep]

    def members(self, cluster: int) -> list[Member]:
        pick = np.flatnonzero(self.labels == cluster)
        pick = pick[np.lexsort((self.seqs[pick], self.dist[pick]))]
        texts = uuid_texts(self.ids[pick])
        return [
            Member(t, float(self.dist[j]), int(self.seqs[j]))
            for t, j in zip(texts, pick.tolist(), strict=True)
        ]


# ------------------------------------------------------------------ the passes


def run_clusters(
    store: EventStore,
    run_id: UUID,
    *,
    limit: int = DEFAULT_LIMIT,
    bins: int = DEFAULT_BINS,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> RunClusters:
    """Every cluster's size, distances, nearest members and distance histogram (two
    streamed passes over the run; see the module docstring)."""
    summary = summarize_run(store, run_id)
    k = summary.started.k if summary.started is not None else 0
    acc = _Accumulator(max(k, 0), limit)
    hashes: list[npt.NDArray[np.uint64]] = []
    for block in _blocks(store, run_id, page_size, on_progress):
        hashes.append(acc.add(block))
    lo, hi = acc.distance_range()
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts = np.zeros(len(acc.count) * bins, dtype=np.int64)
    for block in _blocks(store, run_id, page_size, on_progress):
        labels, dist = _labels_and_distances(block)
        ok = (labels != NOISE) & np.isfinite(dist)
        where = np.clip(((dist[ok] - lo) / (edges[-1] - lo) * bins).astype(np.int64), 0, bins - 1)
        counts += np.bincount(labels[ok] * bins + where, minlength=len(counts))[: len(counts)]
    per_cluster = counts.reshape(-1, bins) if len(counts) else np.zeros((0, bins), np.int64)
    clusters = [
        acc.stats(c, histogram=per_cluster[c].tolist() if c < len(per_cluster) else [])
        for c in range(len(acc.count))
    ]
    return RunClusters(
        run_id=run_id,
        k=len(acc.count),
        n_assignments=acc.n,
        n_noise=acc.noise,
        clusters=clusters,
        bin_edges=[float(x) for x in edges],
        id_hashes=np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
    )


def cluster_members(
    store: EventStore,
    run_id: UUID,
    cluster: int,
    *,
    limit: int = DEFAULT_LIMIT,
    texts: TextsSource | None = None,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> ClusterStats:
    """One cluster's size, distances and ``limit`` members nearest the centroid (with their
    texts from ``texts``). A cluster number the run does not have is a
    ``ClusterNotFoundError``; a texts file without the named columns an ``InputError``."""
    summary = summarize_run(store, run_id)
    k = summary.started.k if summary.started is not None else None
    if cluster < 0 or (k is not None and cluster >= k):
        have = f"clusters 0 to {k - 1}" if k else "no clusters"
        raise ClusterNotFoundError(f"run {run_id} has no cluster {cluster}; it has {have}")
    if texts is not None:
        check_texts_file(texts.path, id_column=texts.id_column, text_column=texts.text_column)
    acc = _Accumulator(cluster + 1, limit, only=cluster)
    hashes = [acc.add(block) for block in _blocks(store, run_id, page_size, on_progress)]
    if k is None and acc.count[cluster] == 0:
        raise ClusterNotFoundError(f"run {run_id} has no cluster {cluster}")
    stats = acc.stats(cluster)
    if texts is None:
        return stats
    found = load_texts(
        texts.path,
        id_column=texts.id_column,
        text_column=texts.text_column,
        wanted=[m.embedding_id for m in stats.nearest],
        run_hashes=np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
    )
    nearest = [replace(m, text=found.get(m.embedding_id)) for m in stats.nearest]
    return replace(stats, nearest=nearest, n_texts_unmatched=found.n_unmatched)


def _blocks(
    store: EventStore, run_id: UUID, page_size: int, on_progress: ProgressFn | None
) -> Iterator[AssignmentBlock]:
    return assignment_blocks(store, run_id, page_size=page_size, on_progress=on_progress)


def _labels_and_distances(
    block: AssignmentBlock,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    return block_labels(block.records), block.records["distance"].astype(np.float64)


class _Accumulator:
    """Per-cluster counters over the blocks of one pass (``only``: one cluster's)."""

    def __init__(self, k: int, limit: int, only: int | None = None):
        self.only = only
        self.count = np.zeros(k, dtype=np.int64)
        self.finite = np.zeros(k, dtype=np.int64)
        self.total = np.zeros(k, dtype=np.float64)
        self.low = np.full(k, np.inf)
        self.high = np.full(k, -np.inf)
        self.nearest = _Nearest(limit)
        self.n = 0
        self.noise = 0

    def add(self, block: AssignmentBlock) -> npt.NDArray[np.uint64]:
        """Count a block; returns the 64-bit hashes of its embedding ids."""
        labels, dist = _labels_and_distances(block)
        ids = block.records["embedding_id"]
        self.n += len(labels)
        noise = labels == NOISE
        self.noise += int(noise.sum())
        keep = ~noise if self.only is None else labels == self.only
        lab, d, seqs, kept_ids = labels[keep], dist[keep], block.seqs[keep], ids[keep]
        if len(lab) and int(lab.max()) >= len(self.count):
            self._grow(int(lab.max()) + 1)
        size = len(self.count)
        self.count += np.bincount(lab, minlength=size)
        fin = np.isfinite(d)
        self.finite += np.bincount(lab[fin], minlength=size)
        self.total += np.bincount(lab[fin], weights=d[fin], minlength=size)
        np.minimum.at(self.low, lab[fin], d[fin])
        np.maximum.at(self.high, lab[fin], d[fin])
        self.nearest.add(lab, d, seqs, kept_ids)
        return id_hash(ids)

    def _grow(self, size: int) -> None:
        extra = size - len(self.count)
        self.count = np.r_[self.count, np.zeros(extra, np.int64)]
        self.finite = np.r_[self.finite, np.zeros(extra, np.int64)]
        self.total = np.r_[self.total, np.zeros(extra)]
        self.low = np.r_[self.low, np.full(extra, np.inf)]
        self.high = np.r_[self.high, np.full(extra, -np.inf)]

    def distance_range(self) -> tuple[float, float]:
        seen = self.finite > 0
        if not seen.any():
            return 0.0, 1.0
        return min(0.0, float(self.low[seen].min())), float(self.high[seen].max())

    def stats(self, cluster: int, *, histogram: list[int] | None = None) -> ClusterStats:
        n = int(self.finite[cluster])
        return ClusterStats(
            cluster=cluster,
            size=int(self.count[cluster]),
            mean_distance=float(self.total[cluster] / n) if n else None,
            max_distance=float(self.high[cluster]) if n else None,
            min_distance=float(self.low[cluster]) if n else None,
            nearest=self.nearest.members(cluster),
            histogram=histogram or [],
        )

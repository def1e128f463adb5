"""What is in a run's clusters: per-cluster size and distances, and the members nearest the
centroid, streamed from the log with bounded memory.

One pass over the run's assignment blocks keeps, per cluster, the count, the sum, min and
max of the distances, the ``limit`` members with the smallest distance (a bounded
selection: each block is merged into the held candidates with one ``lexsort`` and a rank
within each cluster, so at most ``clusters x limit`` candidates are ever held, as numpy
arrays, never as Python objects per row), and a histogram of the distances in ``bins``
equal bins over [0, H), where H is a power of two at least the largest distance seen: when
a larger distance arrives, H doubles and neighbouring bins are added pairwise, so the
counts stay exact and the largest distance always lies in the upper half of the range
(negative distances count in the first bin). Memory is O(block + clusters x (limit +
bins)), whatever the size of the run.

Noise (label ``NOISE`` = -1) is a class of its own: it is counted, never a cluster.
"""

from __future__ import annotations

import math
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
from .compare import NOISE, Keys, Labels, id_hash, id_keys
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
    labels: tuple[Keys, Labels] | None = None  # (id keys, labels) in seq order, if kept

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
    keep_labels: bool = False,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> RunClusters:
    """Every cluster's size, distances, nearest members and distance histogram (one
    streamed pass over the run; see the module docstring). ``keep_labels``: also keep
    every assignment's (id key, label), as ``compare.load_labels`` gives them."""
    summary = summarize_run(store, run_id)
    k = summary.started.k if summary.started is not None else 0
    bins += bins % 2  # halving needs an even count
    acc = _Accumulator(max(k, 0), limit, bins=bins)
    hashes = []
    keys: list[Keys] = []
    labels: list[Labels] = []
    for block in _blocks(store, run_id, page_size, on_progress):
        hashes.append(acc.add(block))
        if keep_labels:  # what load_labels gives, without reading the run again
            keys.append(id_keys(block.records["embedding_id"]))
            labels.append(block_labels(block.records))
    per_cluster = acc.hist.reshape(len(acc.count), bins)
    kept = None
    if keep_labels:
        kept = (
            np.concatenate(keys) if keys else np.zeros((0, 2), dtype=np.uint64),
            np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        )
    return RunClusters(
        run_id=run_id,
        k=len(acc.count),
        n_assignments=acc.n,
        n_noise=acc.noise,
        clusters=[acc.stats(c, histogram=per_cluster[c].tolist()) for c in range(len(acc.count))],
        bin_edges=np.linspace(0.0, acc.top, bins + 1).tolist(),
        id_hashes=np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
        labels=kept,
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

    def __init__(self, k: int, limit: int, only: int | None = None, bins: int = 2):
        self.only = only
        self.bins = bins
        self.top = 1.0  # the histograms' upper edge, a power of two
        self.seen = False
        self.hist = np.zeros(k * bins, dtype=np.int64)
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
        self._histogram(lab[fin], d[fin])
        self.nearest.add(lab, d, seqs, kept_ids)
        return id_hash(ids)

    def _histogram(self, lab: npt.NDArray[np.int64], d: npt.NDArray[np.float64]) -> None:
        if not len(d):
            return
        largest = float(d.max())
        if not self.seen and largest > 0:
            self.top = float(2.0 ** math.ceil(math.log2(largest)))
        self.seen = True
        b = self.bins
        while largest >= self.top:  # double the range: add neighbouring bins pairwise
            halved = self.hist.reshape(-1, b // 2, 2).sum(axis=2)
            self.hist = np.concatenate([halved, np.zeros_like(halved)], axis=1).ravel()
            self.top *= 2
        where = np.clip((d / self.top * b).astype(np.int64), 0, b - 1)
        self.hist += np.bincount(lab * b + where, minlength=len(self.hist))

    def _grow(self, size: int) -> None:
        extra = size - len(self.count)
        self.hist = np.r_[self.hist, np.zeros(extra * self.bins, np.int64)]
        self.count = np.r_[self.count, np.zeros(extra, np.int64)]
        self.finite = np.r_[self.finite, np.zeros(extra, np.int64)]
        self.total = np.r_[self.total, np.zeros(extra)]
        self.low = np.r_[self.low, np.full(extra, np.inf)]
        self.high = np.r_[self.high, np.full(extra, -np.inf)]

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

"""Steps for the Python API's write verbs that have no other step: ``record`` and ``assign``.

``record``: labels of n embeddings made elsewhere (5% noise, -1, as HDBSCAN makes), with
distances and k = 100 centroids; timed: ``Store.record`` (checks, the run's events, and the
catch-up that leaves the read models current), so events/s counts the assignments.

``assign``: a parent run with k = 100 recorded centroids (384-d) is made first; timed:
``Store.assign`` of n new embeddings (nearest centroid in chunks, the child run's events,
the catch-up); events/s counts the new assignments.
"""

from __future__ import annotations

import numpy as np

import clusterstore

from .core import Clock, Measurement
from .synthetic import DIM, SEED, K, embedding_ids, embeddings

NOISE_SHARE = 0.05


def record(backend: str, n: int, db_url: str) -> Measurement:
    rng = np.random.default_rng(SEED)
    ids = embedding_ids(n)
    labels = rng.integers(0, K, size=n, dtype=np.int64)
    labels[rng.random(n) < NOISE_SHARE] = -1
    distances = rng.random(n, dtype=np.float32) * 2.0
    centroids = rng.standard_normal((K, DIM), dtype=np.float32)
    clock = Clock()
    with clusterstore.open(db_url) as store, clock.running():
        run = store.record(
            ids,
            labels,
            model="bench",
            algorithm="hdbscan",
            distances=distances,
            centroids=centroids,
        )
    if run.n_assignments != n:
        raise AssertionError(f"record stored {run.n_assignments} of {n} assignments")
    return clock.measurement(n, f"{run.n_noise:,} noise")


def assign(backend: str, n: int, db_url: str) -> Measurement:
    rng = np.random.default_rng(SEED)
    parent_ids = embedding_ids(K)
    centroids = rng.standard_normal((K, DIM), dtype=np.float32) * 4.0
    x = embeddings(n)
    clock = Clock()
    with clusterstore.open(db_url) as store:
        parent = store.record(
            parent_ids,
            np.arange(K),
            model="bench",
            algorithm="kmeans-l2",
            centroids=centroids,
        )
        with clock.running():
            child = store.assign(parent, x)
    if child.n_assignments != n:
        raise AssertionError(f"assign stored {child.n_assignments} of {n} assignments")
    return clock.measurement(n, f"{DIM}-d, k={K}")

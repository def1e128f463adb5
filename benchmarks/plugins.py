"""Steps beyond the log: ``replay`` (projections) and ``end_to_end`` (clustering +
projections). ``end_to_end`` looks the clustering package up when it runs and is reported as
skipped, with the reason, while it is missing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from clusterstore import projections
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import start_run

from .core import Clock, Measurement, require
from .synthetic import DIM, K, assignment_batches, embedding_ids, embeddings


def _record_run(store: EventStore, n: int) -> None:
    """A completed run of n assignments (RunStarted, n AssignmentRecorded, RunCompleted)."""
    with start_run(
        store, model="bench", algorithm="kmeans-l2", n_embeddings=n, dim=DIM, k=K, seed=0
    ) as run:
        for batch in assignment_batches(n):
            run.record(batch.ids, batch.labels, batch.distances)


def replay(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``replay``: a log holding one completed run of n assignments is made first;
    timed: a full projection rebuild, ``projections.catch_up_all(store)``, on a read model
    that has never run (a fresh database)."""
    clock = Clock()
    with EventStore.open(db_url) as store:
        _record_run(store, n)
        with clock.running():
            projections.catch_up_all(store)
    return clock.measurement(n)


def _run_clustering(
    store: EventStore,
    vectors: npt.NDArray[np.float32],
    ids: npt.NDArray[np.void],
    *,
    k: int,
    seed: int,
) -> None:
    """Cluster ``vectors`` (n x 384 float32) into ``k`` clusters with the clustering
    package's public API and record the run in ``store`` (RunStarted, CentroidsComputed, one
    AssignmentRecorded per row with ``ids[row]`` as its embedding id, RunCompleted).
    Projections are brought up to date by the caller."""
    from clusterstore.clustering import ArraySource, ClusterSettings, cluster

    cluster(store, ArraySource(vectors), ClusterSettings(model="bench", k=k, seed=seed), ids=ids)


def end_to_end(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``end_to_end``: n x 384 float32 synthetic embeddings, k=100; timed: cluster +
    record (``_run_clustering``) with the projections following the log
    (``projections.alongside``), then ``projections.catch_up_all`` (the read models
    current)."""
    require("clustering", "end_to_end needs the clustering package")
    vectors = embeddings(n)
    ids = embedding_ids(n)
    clock = Clock()
    with EventStore.open(db_url) as store, clock.running():
        with projections.alongside(store):  # as `clusterstore cluster` does
            _run_clustering(store, vectors, ids, k=K, seed=0)
        projections.catch_up_all(store)
    return clock.measurement(n)

"""Labelling new embeddings with a recorded run's centroids: ``assign``.

    result = assign(store, "01a2243b", ArraySource(x_new))

No training: every row goes to its nearest centroid of the parent run, with the parent's
metric (squared L2, or cosine for ``kmeans-spherical`` and runs whose params say
``"distance": "cosine"``), in chunks (``assign.assign_and_write``: bounded memory). The rows
are recorded as a new run whose ``RunStarted.parent_run_id`` names the parent and whose
``CentroidsComputed`` repeats the parent's centroids, so the child is self-describing (and
can be assigned to in turn). Refused before anything is written when the parent has no
centroids (labels recorded without them, imported runs) or the dimensions differ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.events import CentroidsComputed, RunStarted
from clusterstore.eventstore.runs import DEFAULT_BATCH_SIZE, start_run
from clusterstore.eventstore.store import EventStore

from .assign import assign_and_write
from .ids import ids_digest
from .inputs import (
    DISTANCE_NORM_LIMIT,
    MAX_ROW_NORM,
    EmbeddingSource,
    default_chunk_rows,
    scan,
)
from .kmeans import Assigner, faiss_version
from .runner import (
    ALGORITHMS,
    DEFAULT_THREADS,
    ClusterResult,
    Reporter,
    SilentReporter,
    _ids_for,
    _load_ids,
    _result,
    _resumable,
)

METRICS = {"squared_l2": False, "cosine": True}  # params["distance"] -> spherical


def parent_centroids(
    store: EventStore, run: str | UUID
) -> tuple[UUID, RunStarted, CentroidsComputed, bool]:
    """The parent run's id, RunStarted, centroids and metric (True: cosine), or
    ``InputError`` naming why the run cannot be assigned to."""
    run_id = store.resolve_run(run)
    events = [e.event for e in store.read(run_id, limit=2)]
    started = events[0] if events and isinstance(events[0], RunStarted) else None
    centroids = events[1] if len(events) > 1 else None
    if started is None:
        raise InputError(f"run {run_id} has no RunStarted event; it cannot be assigned to")
    if not isinstance(centroids, CentroidsComputed):
        how = "imported" if started.imported_from else "recorded without centroids"
        raise InputError(
            f"run {run_id} ({started.algorithm}) has no centroids ({how}), so new embeddings "
            "cannot be assigned to its clusters; record the run with centroids, or use a run "
            "made by `clusterstore cluster`"
        )
    distance = started.params.get("distance")
    if started.algorithm == ALGORITHMS[True]:
        spherical = True
    elif distance is None or distance in METRICS:
        spherical = METRICS.get(distance or "squared_l2", False)
    else:
        raise InputError(
            f"run {run_id} records the distance {distance!r}; assign knows {' and '.join(METRICS)}"
        )
    return run_id, started, centroids, spherical


def assign(
    store: EventStore,
    parent: str | UUID,
    source: EmbeddingSource,
    *,
    ids: str | Path | npt.ArrayLike | None = None,
    id_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = DEFAULT_THREADS,
    chunk_rows: int | None = None,
    reporter: Reporter | None = None,
) -> ClusterResult:
    """Label ``source``'s rows with the parent run's centroids and record them as a new run
    (see the module docstring). Ids as for ``cluster``: given, or derived from the input."""
    rep = reporter or SilentReporter()
    t_start = time.perf_counter()
    parent_id, started, cents, spherical = parent_centroids(store, parent)
    if source.dim != cents.dim:
        raise InputError(
            f"{source.label} has dimension {source.dim} but run {parent_id}'s centroids have "
            f"{cents.dim}; assign embeddings made by the same model ({started.model})"
        )
    if batch_size < 1 or threads < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise InputError("batch size, threads and chunk rows must be at least 1")
    id_array, ids_path = _load_ids(ids, source.n, id_column)
    chunk = chunk_rows or default_chunk_rows(source.dim)
    t0 = time.perf_counter()
    centroids = np.frombuffer(cents.centroids, dtype="<f4").reshape(cents.k, cents.dim)
    if spherical:
        centroids = _unit_rows(centroids, parent_id)
    max_norm = _row_norm_limit(centroids, parent_id)
    with rep.stage("checking input", source.n) as tick:
        digest = scan(
            source, chunk_rows=chunk, spherical=spherical, on_rows=tick, max_norm=max_norm
        ).digest
    timings = {"validate_s": time.perf_counter() - t0}
    params: dict[str, Any] = {
        "assigned_from": str(parent_id),
        "distance": "cosine" if spherical else "squared_l2",
        "batch_size": batch_size,
        "chunk_rows": chunk,
        "npz_key": source.npz_key,
        "embeddings_column": getattr(source, "column", None),
        "id_column": id_column,
        "ids": "derived" if id_array is None else "given",
        "ids_path": None if ids_path is None else str(ids_path.resolve()),
    }
    writer = start_run(
        store,
        model=started.model,
        algorithm=started.algorithm,
        n_embeddings=source.n,
        dim=source.dim,
        k=cents.k,
        params=params,
        input_digest=digest,
        batch_size=batch_size,
        input_path=None if source.path is None else str(source.path.resolve()),
        ids_digest=None if id_array is None else ids_digest(id_array),
        faiss_version=faiss_version(),
        threads=threads,
        parent_run_id=parent_id,
    )
    with writer:
        writer.record_centroids(centroids)
        _resumable(writer, source, id_array, ids_path)
        assigner = Assigner(centroids, spherical=spherical, threads=threads)
        timings.update(
            assign_and_write(
                writer,
                source,
                _ids_for(id_array, digest),
                assigner,
                start_row=0,
                chunk_rows=chunk,
                reporter=rep,
            )
        )
        completed = writer.complete()
    timings["total_s"] = time.perf_counter() - t_start
    return _result(writer, completed, n_written=source.n, timings=timings, warnings=[])


def _row_norm_limit(centroids: npt.NDArray[np.float32], run_id: UUID) -> float:
    """How long a row may be: faiss's float32 squared distance to a centroid reaches
    ``(|row| + |centroid|)^2``, which must stay below ``DISTANCE_NORM_LIMIT ** 2``. Centroids
    are below ``MAX_ROW_NORM`` (k-means means of such rows, or checked by ``record``), so
    the rows get ``MAX_ROW_NORM`` too: the limit ``cluster`` and ``runs resume`` apply."""
    largest = float(np.linalg.norm(centroids.astype(np.float64), axis=1).max())
    if largest + MAX_ROW_NORM >= DISTANCE_NORM_LIMIT:
        raise InputError(
            f"run {run_id}'s centroids have a norm of {largest:.3g}: faiss's float32 squared "
            "distances to them would overflow; record the run with smaller centroids"
        )
    return MAX_ROW_NORM


def _unit_rows(centroids: npt.NDArray[np.float32], run_id: UUID) -> npt.NDArray[np.float32]:
    """Cosine needs unit centroids: spherical k-means made them so (then they are kept bit
    for bit); centroids recorded with labels may not be."""
    norms = np.linalg.norm(centroids.astype(np.float64), axis=1)
    if np.all(np.abs(norms - 1.0) <= 1e-4):
        return centroids
    if np.any(norms == 0):
        row = int(np.flatnonzero(norms == 0)[0])
        raise InputError(f"run {run_id}: centroid {row} is all zeros; cosine cannot use it")
    return (centroids / norms[:, None]).astype(np.float32)

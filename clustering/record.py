"""Recording labels made by any clustering (HDBSCAN, BERTopic, scikit-learn, ...) as a run.

    run_id = record_labels(store, ids, labels, model="m", algorithm="hdbscan")

Everything is checked before anything is written: the ids (the one normaliser,
``eventstore.ids``: UUIDs, UUID strings or 16-byte values; unique), the labels (a 1-D
integer array, one per id, ``-1`` for noise and nothing below it), the distances (one
number per id; NaN when not given, as for imported runs) and the centroids (k x dim finite
floats; they let ``assign`` label new embeddings with this run's clusters, with the
squared L2 distance, or the cosine one if ``params={"distance": "cosine"}``).
k is the number of centroids, or the largest label + 1.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.runs import DEFAULT_BATCH_SIZE, start_run
from clusterstore.eventstore.store import EventStore

from .ids import as_ids, check_unique, ids_digest
from .inputs import check_magnitudes

NOISE = -1
MAX_CLUSTERS = 1 << 20  # what verify and the replay count densely (``eventstore.runs``)


def record_labels(
    store: EventStore,
    ids: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    model: str,
    algorithm: str,
    distances: npt.ArrayLike | None = None,
    centroids: npt.ArrayLike | None = None,
    params: dict[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> UUID:
    """Check, then record the labels as a completed run; returns its id."""
    id_array = as_ids(ids, "ids")
    n = id_array.shape[0]
    label_array = check_labels(labels, n)
    dist = _distances(distances, n)
    cents = None if centroids is None else check_centroids(centroids)
    _check_names(model, algorithm)
    check_params(params)
    if n == 0:
        raise InputError("no labels given; a run needs at least one")
    check_unique(id_array, "the ids")
    top = int(label_array.max())
    if cents is not None:
        k = cents.shape[0]
        if top >= k:
            row = int(np.flatnonzero(label_array >= k)[0])
            raise InputError(
                f"labels row {row}: cluster {int(label_array[row])} has no centroid "
                f"({k} centroids given)"
            )
    elif top < 0:
        raise InputError("every label is -1 (noise): there is no cluster to record")
    else:
        k = top + 1
    if k > MAX_CLUSTERS:
        raise InputError(
            f"cluster labels must be below {MAX_CLUSTERS:,}; got {k - 1:,} (number the "
            "clusters 0..k-1)"
        )
    writer = start_run(
        store,
        model=model,
        algorithm=algorithm,
        n_embeddings=n,
        dim=0 if cents is None else cents.shape[1],
        k=k,
        params=dict(params or {}),
        batch_size=batch_size,
        ids_digest=ids_digest(id_array),
        has_distances=distances is not None,
    )
    with writer:
        if cents is not None:
            writer.record_centroids(cents)
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            writer.record(id_array[lo:hi], label_array[lo:hi], dist[lo:hi])
    return writer.run_id


def check_labels(labels: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """Labels as int64: 1-D, ``n`` of them, integers, none below -1 (noise)."""
    arr = np.asarray(labels)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise InputError(
            f"labels must be integers (cluster numbers, -1 for noise), got an array of {arr.dtype}"
        )
    if arr.ndim != 1:
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise InputError(f"labels must be a 1-D array, one per id; got shape {shape}")
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} labels given for {n} ids; give one label per id")
    if arr.dtype.kind == "u" and n and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError("labels do not fit in 64-bit integers")
    out = arr.astype(np.int64)
    below = np.flatnonzero(out < NOISE)
    if below.size:
        row = int(below[0])
        raise InputError(f"labels row {row}: {int(out[row])} is below -1 (-1 marks noise)")
    return out


def _distances(distances: npt.ArrayLike | None, n: int) -> npt.NDArray[np.float32]:
    if distances is None:
        return np.full(n, np.nan, dtype=np.float32)
    arr = np.asarray(distances)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise InputError(f"distances must be numbers, got an array of {arr.dtype}")
    if arr.shape != (n,):
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise InputError(f"distances must be a 1-D array of {n} numbers, got shape {shape}")
    return arr.astype(np.float32)


def check_centroids(centroids: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(centroids)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise InputError(f"centroids must be numbers, got an array of {arr.dtype}")
    if arr.ndim != 2 or 0 in arr.shape:
        shape = "x".join(map(str, arr.shape)) or "scalar"
        raise InputError(f"centroids must be a k x dim array, got shape {shape}")
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InputError(f"centroid {row} is not finite (as float32)")
    check_magnitudes("centroids", 0, out)  # assign would compute distances to them
    return out


def check_params(params: Any) -> None:
    if params is None:
        return
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise InputError("params must be a dict with string keys")
    try:
        msgspec.msgpack.encode(params)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"params must hold JSON-like values only: {e}") from e


def _check_names(model: str, algorithm: str) -> None:
    if not isinstance(model, str) or not model.strip():
        raise InputError("a run needs a model name")
    if not isinstance(algorithm, str) or not algorithm.strip():
        raise InputError("a run needs an algorithm name (e.g. hdbscan)")

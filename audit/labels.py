"""A run's assignments as three numpy arrays, for notebooks and pipelines.

``run_labels`` reads the run's assignments in seq order (page by page, then joined: the
result is O(n), which is what the caller asked for) as

- ids: 1-D ``V16`` array, each the 16 bytes of a UUID (``uuid.UUID(bytes=ids[i].tobytes())``;
  every id form the store accepts also takes this one back);
- clusters: 1-D ``int64``, -1 for noise;
- distances: 1-D ``float32`` (NaN where the run recorded none).
"""

from __future__ import annotations

from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.codec import labels_of

from ._log import PAGE_SIZE, ProgressFn, assignment_blocks

Labels = tuple[npt.NDArray[np.void], npt.NDArray[np.int64], npt.NDArray[np.float32]]


def run_labels(
    store: EventStore,
    run_id: UUID,
    *,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> Labels:
    """(ids, clusters, distances) of the run's recorded assignments, in seq order."""
    ids: list[npt.NDArray[np.void]] = []
    clusters: list[npt.NDArray[np.int64]] = []
    distances: list[npt.NDArray[np.float32]] = []
    for block in assignment_blocks(store, run_id, page_size=page_size, on_progress=on_progress):
        rec = block.records
        ids.append(np.ascontiguousarray(rec["embedding_id"]).astype("V16"))
        clusters.append(labels_of(rec))
        distances.append(rec["distance"].astype(np.float32))
    if not ids:
        return np.empty(0, "V16"), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(ids), np.concatenate(clusters), np.concatenate(distances)

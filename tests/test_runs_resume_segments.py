"""read_progress / resume_run across several segments (each resume starts a new one)."""

from __future__ import annotations

import numpy as np

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.codec import AssignmentDigest, pack_assignments
from clusterstore.eventstore.runs import read_progress, resume_run, start_run


def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.arange(lo, hi, dtype=np.uint64)
    ids = np.zeros((hi - lo, 2), dtype=">u8")
    ids[:, 1] = r
    return ids.view(np.uint8).reshape(-1, 16), (r % 3).astype(np.int64), r.astype(np.float32)


def test_resumed_twice_in_one_page_keeps_rows_at_their_seqs(store: EventStore) -> None:
    writer = start_run(store, model="m", algorithm="kmeans-l2", n_embeddings=30, dim=2, k=3)
    writer.record_centroids(np.zeros((3, 2)))
    writer.record(*rows(0, 10))
    _, w2 = resume_run(store, writer.run_id)
    w2.record(*rows(10, 20))
    # the whole run fits in one page: segments must be replayed in seq order
    progress, w3 = read_progress(store, writer.run_id)
    assert progress.rows_done == 20
    assert w3.seq_of(10) == w2.seq_of(10)
    # re-sending rows of the second segment through the replayed writer is a no-op
    assert w3.record(*rows(10, 20), start_row=10) == 0
    _, w4 = resume_run(store, writer.run_id)
    w4.record(*rows(20, 30))
    done = w4.complete()
    expected = AssignmentDigest()
    packed = pack_assignments(*rows(0, 30))
    expected.update(packed.data, packed.count)
    assert (done.count, done.digest) == (30, expected.hexdigest())
    assert done.cluster_sizes == [10, 10, 10]

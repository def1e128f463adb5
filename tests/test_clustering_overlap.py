"""The checking pass overlapping training and assignment (random-access inputs: arrays,
``.npy`` files) gives exactly the run the sequential path (an input read forward only, a
``.npz`` member) gives, and still writes nothing for an input that fails the checks, even
when the bad row is one the training sample holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clusterstore.clustering import ArraySource, ClusterSettings, cluster, cluster_file
from clusterstore.clustering.files import open_source
from clusterstore.eventstore import EventStore, InputError

from .test_clustering_runs import assignment_payloads, blobs, log_snapshot


def test_overlapped_and_sequential_paths_record_the_same_run(
    store: EventStore, tmp_path: Path
) -> None:
    x = blobs(3000, d=6, k=5, seed=2)
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", emb=x)
    assert open_source(tmp_path / "x.npy").random_access
    assert not open_source(tmp_path / "x.npz", "emb").random_access
    settings = ClusterSettings(model="m", k=5, seed=9, batch_size=700, chunk_rows=512)
    a = cluster_file(store, tmp_path / "x.npy", settings)
    b = cluster_file(store, tmp_path / "x.npz", settings, npz_key="emb")
    c = cluster(store, ArraySource(x), settings)
    assert a.input_digest == b.input_digest == c.input_digest
    assert a.digest == b.digest == c.digest
    assert assignment_payloads(store, a.run_id) == assignment_payloads(store, b.run_id)
    assert a.cluster_sizes == b.cluster_sizes == c.cluster_sizes


@pytest.mark.parametrize("bad", ["first", "sampled", "last"])
def test_a_bad_row_writes_nothing_and_names_the_first_bad_row(store: EventStore, bad: str) -> None:
    """``train_per_centroid`` makes the sample every row ("sampled": the bad row is in the
    training rows and is never trained on); the message names the first bad row."""
    x = blobs(400, d=4, k=3, seed=1)
    row = {"first": 0, "sampled": 123, "last": 399}[bad]
    x[row, 2] = np.nan
    x[row + 1 if row < 399 else 5, 1] = np.inf  # a later bad row is not the one named
    first = min(row, row + 1 if row < 399 else 5)
    before = log_snapshot(store)
    per = 400 if bad == "sampled" else 20
    settings = ClusterSettings(model="m", k=3, seed=1, train_per_centroid=per, chunk_rows=64)
    with pytest.raises(InputError, match=f"row {first} contains"):
        cluster(store, ArraySource(x, "emb.npy"), settings)
    assert log_snapshot(store) == before

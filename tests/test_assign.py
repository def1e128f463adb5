"""``assign``: new embeddings labelled with a recorded run's centroids, as a child run.

The labels are checked against a direct numpy nearest-centroid computation (L2 and
cosine), and the child's rows in ``embeddingcluster`` against the parent's ``cluster_id``s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import clusterstore
from clusterstore import projections
from clusterstore.eventstore import CentroidsComputed, RunStarted
from tests.api_util import blobs, hex_id, uuids, view_rows


@pytest.fixture
def api(db_url: str) -> Iterator[clusterstore.Store]:
    with clusterstore.open(db_url) as store:
        yield store


def centroids_of(api: clusterstore.Store, run: clusterstore.Run) -> np.ndarray:
    event = next(e.event for e in api.event_store.read(run.run_id) if e.seq == 2)
    assert isinstance(event, CentroidsComputed)
    return np.frombuffer(event.centroids, dtype="<f4").reshape(event.k, event.dim)


def started_of(api: clusterstore.Store, run: clusterstore.Run) -> RunStarted:
    event = next(iter(api.event_store.read(run.run_id))).event
    assert isinstance(event, RunStarted)
    return event


def nearest_l2(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(axis=2)
    return d.argmin(axis=1), d.min(axis=1)


def nearest_cosine(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unit = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    cu = c.astype(np.float64) / np.linalg.norm(c, axis=1, keepdims=True)
    sim = unit @ cu.T
    return sim.argmax(axis=1), 1 - sim.max(axis=1)


def test_assign_l2_gives_the_direct_nearest_centroid(api: clusterstore.Store) -> None:
    parent = api.cluster(blobs(400, seed=1), model="m", k=5, seed=4)
    fresh = blobs(250, seed=2)  # a new sample
    child = api.assign(parent, fresh)
    want, dist = nearest_l2(fresh, centroids_of(api, parent))
    _, clusters, distances = api.labels(child)
    assert clusters.tolist() == want.tolist()
    np.testing.assert_allclose(distances, dist, rtol=1e-4, atol=1e-3)
    assert (child.status, child.parent_run_id, child.k, child.n_assignments) == (
        "completed",
        parent.run_id,
        5,
        250,
    )
    assert (child.model, child.algorithm) == (parent.model, parent.algorithm)
    assert np.array_equal(centroids_of(api, child), centroids_of(api, parent))
    assert started_of(api, child).parent_run_id == parent.run_id
    assert started_of(api, child).train_size is None  # no training
    assert api.verify(child).ok


def test_assign_spherical_uses_cosine(api: clusterstore.Store) -> None:
    parent = api.cluster(blobs(400, seed=1), model="m", k=4, seed=2, spherical=True)
    fresh = blobs(120, seed=5)
    kept = fresh.copy()
    child = api.assign(parent, fresh)
    assert np.array_equal(fresh, kept)  # the caller's array is not normalised in place
    want, dist = nearest_cosine(fresh, centroids_of(api, parent))
    _, clusters, distances = api.labels(child)
    assert clusters.tolist() == want.tolist()
    np.testing.assert_allclose(distances, np.maximum(dist, 0), atol=1e-5)
    assert child.params["distance"] == "cosine"


def test_recorded_centroids_and_their_metric(api: clusterstore.Store) -> None:
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(3, 6)).astype(np.float32) * 5
    labels = np.array([0, 1, 2, 0, 2])
    l2 = api.record(uuids(5), labels, model="m", algorithm="hdbscan", centroids=centroids)
    cos = api.record(
        uuids(5, seed=1),
        labels,
        model="m",
        algorithm="hdbscan",
        centroids=centroids,
        params={"distance": "cosine"},
    )
    fresh = rng.normal(size=(60, 6)).astype(np.float32)
    assert api.labels(api.assign(l2, fresh))[1].tolist() == nearest_l2(fresh, centroids)[0].tolist()
    assert (
        api.labels(api.assign(cos, fresh))[1].tolist()
        == nearest_cosine(fresh, centroids)[0].tolist()
    )


def test_chunks_and_ids(api: clusterstore.Store, tmp_path: Path) -> None:
    parent = api.cluster(blobs(300), model="m", k=3, seed=1)
    fresh = blobs(97, seed=3)
    ids = uuids(97)
    whole = api.assign(parent, fresh, ids=[str(u) for u in ids])
    chunked = api.assign(parent, fresh, ids=ids, chunk_rows=10, batch_size=7)
    assert whole.assignment_digest == chunked.assignment_digest  # same rows, same bytes
    assert [bytes(i) for i in api.labels(whole)[0]] == [u.bytes for u in ids]
    np.save(tmp_path / "new.npy", fresh)
    from_file = api.assign(parent.run_id, tmp_path / "new.npy")
    derived = api.assign(str(parent.run_id)[:13], fresh)
    assert from_file.input_digest == derived.input_digest  # the same input, file or array
    assert from_file.assignment_digest == derived.assignment_digest  # ids derived alike


def test_child_rows_share_the_parents_cluster_ids(api: clusterstore.Store, backend: str) -> None:
    parent = api.cluster(blobs(300), model="m", k=4, seed=1)
    child = api.assign(parent, blobs(80, seed=7))
    grandchild = api.assign(child, blobs(30, seed=8))
    other = api.cluster(blobs(300), model="m", k=4, seed=2)

    def cluster_ids(run: clusterstore.Run) -> dict[int, object]:
        rows = view_rows(
            api,
            "SELECT DISTINCT cluster, cluster_id FROM embeddingcluster WHERE run_id = :r",
            r=hex_id(run, backend),
        )
        mapping = dict(rows)
        assert len(mapping) == len(rows)  # one cluster_id per cluster
        return mapping

    parent_ids = cluster_ids(parent)
    assert len(parent_ids) == 4
    for descendant in (child, grandchild):
        assert cluster_ids(descendant).items() <= parent_ids.items()
    assert not set(cluster_ids(other).values()) & set(parent_ids.values())
    joined = view_rows(
        api,
        "SELECT count(*) FROM embeddingcluster c JOIN clustersize p "
        "ON p.cluster_id = c.cluster_id AND p.run_id = :p WHERE c.run_id = :c",
        p=hex_id(parent, backend),
        c=hex_id(child, backend),
    )
    assert joined == [(80,)]  # SQL joins a child's rows to the parent's clusters
    before = view_rows(api, "SELECT id, cluster_id FROM embeddingcluster ORDER BY id")
    projections.rebuild(api.event_store)
    assert view_rows(api, "SELECT id, cluster_id FROM embeddingcluster ORDER BY id") == before

"""Clustering runs through the library, on both backends: the recorded events, determinism,
batch boundaries, resume after a failure, and the checks that refuse to resume."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clusterstore.clustering import (
    ArraySource,
    ClusterSettings,
    cluster,
    cluster_file,
    derived_ids,
    resume,
)
from clusterstore.eventstore import (
    AssignmentRecorded,
    CentroidsComputed,
    EventStore,
    InputError,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from clusterstore.eventstore.codec import unpack_assignments
from tests.digest_ref import reference_digest_v2, split


def blobs(n: int, d: int = 8, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 5 * rng.standard_normal((k, d))
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def assignment_payloads(store: EventStore, run_id: Any) -> bytes:
    return b"".join(e.payload for e in store.read_raw(run_id) if e.type == AssignmentRecorded.TYPE)


def log_snapshot(store: EventStore) -> list[tuple[Any, ...]]:
    return [(e.run_id, e.seq, e.type, e.payload, e.position) for e in store.feed()]


class FailAfter:
    """A reporter whose progress callback raises once ``limit`` rows were written."""

    def __init__(self, limit: int):
        self.limit = limit
        self.written = 0

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        def tick(n: int) -> None:
            if name.startswith("assigning"):
                self.written += n
                if self.written >= self.limit:
                    raise RuntimeError("disk on fire")

        yield tick

    def warn(self, message: str) -> None:
        pass


def test_a_run_records_started_centroids_assignments_and_completed(store: EventStore) -> None:
    x = blobs(500)
    result = cluster(
        store,
        ArraySource(x),
        ClusterSettings(model="m", k=4, seed=3, batch_size=64, chunk_rows=100),
    )
    events = list(store.read(result.run_id))
    started, centroids = events[0].event, events[1].event
    assert isinstance(started, RunStarted) and isinstance(centroids, CentroidsComputed)
    assert (started.model, started.algorithm, started.k, started.n_embeddings, started.dim) == (
        "m",
        "kmeans-l2",
        4,
        500,
        8,
    )
    assert (started.seed, started.train_size, started.threads) == (3, 500, 1)
    assert started.faiss_version and started.input_path is None
    assert started.params["distance"] == "squared_l2" and started.params["ids"] == "derived"
    assert [e.seq for e in events] == list(range(1, 504))
    assert all(isinstance(e.event, AssignmentRecorded) for e in events[2:-1])
    done = events[-1].event
    assert isinstance(done, RunCompleted)
    payloads = assignment_payloads(store, result.run_id)
    assert done.count == 500 == result.n_assignments
    assert done.digest == reference_digest_v2(split(payloads)) == result.digest
    rec = unpack_assignments(payloads)
    assert rec["embedding_id"].tobytes() == derived_ids(started.input_digest, 0, 500).tobytes()
    assert done.cluster_sizes == np.bincount(rec["cluster"].astype(int), minlength=4).tolist()
    # every row went to its nearest recorded centroid
    c = np.frombuffer(centroids.centroids, dtype="<f4").reshape(4, 8)
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(rec["cluster"], d2.argmin(axis=1))
    np.testing.assert_allclose(rec["distance"], d2.min(axis=1), rtol=1e-4, atol=1e-3)


def test_spherical_runs_label_by_cosine(store: EventStore) -> None:
    x = blobs(300) + 10  # far from the origin: cosine and L2 disagree
    result = cluster(store, ArraySource(x), ClusterSettings(model="m", k=3, seed=1, spherical=True))
    events = [e.event for e in store.read(result.run_id)]
    assert events[0].algorithm == "kmeans-spherical"
    c = np.frombuffer(events[1].centroids, dtype="<f4").reshape(3, 8)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, rtol=1e-5)
    rec = unpack_assignments(assignment_payloads(store, result.run_id))
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ c.T
    np.testing.assert_array_equal(rec["cluster"], cos.argmax(axis=1))
    np.testing.assert_allclose(rec["distance"], 1 - cos.max(axis=1), atol=1e-5)


def test_same_seed_gives_identical_assignments(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, blobs(2000, d=16, k=6))
    settings = ClusterSettings(model="m", k=6, seed=11, batch_size=300, train_per_centroid=50)
    a = cluster_file(store, path, settings)
    b = cluster_file(store, path, settings)
    assert a.run_id != b.run_id
    assert a.digest == b.digest
    assert assignment_payloads(store, a.run_id) == assignment_payloads(store, b.run_id)
    started = next(iter(store.read(a.run_id))).event
    assert started.train_size == 300 and started.input_path == str(path.resolve())


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_sizes_around_batch_boundaries_complete_with_exactly_n(
    store: EventStore, delta: int
) -> None:
    k, batch = 3, 40
    n = k * batch + delta
    result = cluster(
        store,
        ArraySource(blobs(n, k=k)),
        ClusterSettings(model="m", k=k, seed=5, batch_size=batch, chunk_rows=33),
    )
    assert result.n_assignments == n
    commits = [c for c in store.recorder.read_commits() if c.run_id == result.run_id]
    sizes = [c.count for c in commits[2:-1]]  # RunStarted, CentroidsComputed ... RunCompleted
    assert sum(sizes) == n
    assert all(s == batch for s in sizes[:-1]) and 0 < sizes[-1] <= batch
    assert store.head(result.run_id) == n + 3


def test_resume_after_a_failure_equals_an_uninterrupted_run(
    store: EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "x.npy"
    np.save(path, blobs(1000))
    settings = ClusterSettings(model="m", k=4, seed=2, batch_size=100, chunk_rows=128)
    whole = cluster_file(store, path, settings)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cluster_file(store, path, settings, reporter=FailAfter(300))
    broken = store.runs()[-1].run_id
    events = [e.event for e in store.read(broken)]
    assert isinstance(events[-1], RunFailed) and events[-1].error == "disk on fire"
    result = resume(store, str(broken)[:13])
    assert (result.run_id, result.resumed_from, result.n_written) == (broken, 300, 700)
    assert result.digest == whole.digest
    assert assignment_payloads(store, broken) == assignment_payloads(store, whole.run_id)
    resumed = [e.event for e in store.read(broken) if isinstance(e.event, RunResumed)]
    assert [r.from_row for r in resumed] == [300]


def test_resume_with_given_ids_reloads_and_checks_them(store: EventStore, tmp_path: Path) -> None:
    path, ids = tmp_path / "x.npy", tmp_path / "ids.npy"
    np.save(path, blobs(400))
    np.save(ids, np.random.default_rng(0).integers(0, 256, (400, 16), dtype=np.uint8))
    settings = ClusterSettings(model="m", k=4, seed=2, batch_size=50, chunk_rows=64)
    whole = cluster_file(store, path, settings, ids=ids)
    with pytest.raises(RuntimeError):
        cluster_file(store, path, settings, ids=ids, reporter=FailAfter(100))
    broken = store.runs()[-1].run_id
    np.save(
        tmp_path / "other.npy", np.random.default_rng(1).integers(0, 256, (400, 16), dtype=np.uint8)
    )
    before = log_snapshot(store)
    with pytest.raises(InputError, match=f"other.npy is not the ids file run {broken}"):
        resume(store, broken, ids=tmp_path / "other.npy")
    assert log_snapshot(store) == before
    assert resume(store, broken).digest == whole.digest


def test_resume_refusals_leave_the_log_unchanged(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, blobs(200))
    settings = ClusterSettings(model="m", k=2, seed=2, batch_size=50)
    done = cluster_file(store, path, settings)
    with pytest.raises(RuntimeError):
        cluster_file(store, path, settings, reporter=FailAfter(50))
    broken = store.runs()[-1].run_id
    changed = tmp_path / "changed.npy"
    x = blobs(200)
    x[7, 0] += 1
    np.save(changed, x)
    np.save(tmp_path / "small.npy", blobs(100))
    before = log_snapshot(store)
    cases = {
        str(done.run_id): (None, f"run {done.run_id} is already completed; nothing to resume"),
        str(broken): (changed, None),
        str(broken)[:20]: (
            tmp_path / "small.npy",
            "small.npy holds 100 x 8 embeddings but "
            f"run {broken} was started on 200 x 8; pass its input",
        ),
    }
    for ref, (emb, message) in cases.items():
        with pytest.raises(InputError) as info:
            resume(store, ref, embeddings=emb)
        if message is not None:
            assert str(info.value) == message
        else:
            assert str(info.value).startswith(f"changed.npy is not the input of run {broken}: ")
    assert log_snapshot(store) == before


def test_a_run_without_centroids_cannot_be_resumed(store: EventStore) -> None:
    from clusterstore.eventstore.runs import start_run

    writer = start_run(store, model="m", algorithm="kmeans-l2", n_embeddings=10, dim=2, k=2)
    writer.fail("killed while training")
    with pytest.raises(InputError) as info:
        resume(store, writer.run_id)
    assert str(info.value) == (
        f"run {writer.run_id} stopped before its centroids were recorded, so it cannot be "
        "resumed; start a new run"
    )


def test_too_few_points_per_cluster_warns_and_records_the_warning(store: EventStore) -> None:
    class Collect(FailAfter):
        def __init__(self) -> None:
            super().__init__(10**9)
            self.warnings: list[str] = []

        def warn(self, message: str) -> None:
            self.warnings.append(message)

    rep = Collect()
    result = cluster(
        store, ArraySource(blobs(100)), ClusterSettings(model="m", k=4, seed=1), reporter=rep
    )
    expected = (
        "100 embeddings for k=4 is fewer than 39 per cluster (156); the centroids "
        "will be poorly estimated, consider a smaller k"
    )
    assert rep.warnings == result.warnings == [expected]
    assert next(iter(store.read(result.run_id))).event.params["warnings"] == [expected]
    assert result.n_assignments == 100

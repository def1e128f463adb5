"""Projections on both backends: what the read models hold, ids, checkpoints, locks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
from sqlalchemy import inspect

from clusterstore import projections
from clusterstore.eventstore import (
    DatabaseBusyError,
    EventStore,
    RawEvent,
    RunStarted,
    SchemaError,
    pack_assignments,
)
from clusterstore.eventstore.runs import resume_run
from clusterstore.projections.runner import Runner
from tests.pj_util import make_run, query, rows, snapshot, truth


def completed_ids(store: EventStore) -> set[uuid.UUID]:
    got = query(store, "SELECT DISTINCT run_id FROM embeddingcluster")
    return {v if isinstance(v, uuid.UUID) else uuid.UUID(hex=v) for (v,) in got}


def test_only_completed_runs_are_visible(store: EventStore) -> None:
    done = make_run(store, 20, seed=1)
    running = make_run(store, 20, seed=2, recorded=9)
    failed = make_run(store, 20, seed=3, recorded=13, fail=True)
    projections.catch_up_all(store)

    assert completed_ids(store) == {done}
    assert query(store, "SELECT count(*) FROM embeddingcluster") == [(20,)]
    log = truth(store)
    completed = log[done].completed
    assert completed is not None
    assert projections.read_model_digest(store, done) == (20, completed.digest)
    assert projections.read_model_digest(store, running) is None
    assert projections.read_model_digest(store, failed) is None
    assert projections.read_model_digest(store, uuid.uuid4()) is None

    status = {
        uuid.UUID(str(r[0])): r[1:]
        for r in query(store, "SELECT run_id, status, n_assignments, error FROM clusteringresult")
    }
    assert status == {
        done: ("completed", 20, None),
        running: ("running", 9, None),
        failed: ("failed", 13, "boom"),
    }


def test_failed_run_resumed_and_completed_becomes_visible(store: EventStore) -> None:
    run = make_run(store, 30, seed=4, recorded=11, fail=True)
    projections.catch_up_all(store)
    assert projections.read_model_digest(store, run) is None

    ids, labels, dist = rows(30, 3, 4)
    _, writer = resume_run(store, run, batch_size=6)
    writer.record(ids[11:], labels[11:], dist[11:])
    completed = writer.complete()
    projections.catch_up_all(store)

    assert projections.read_model_digest(store, run) == (30, completed.digest)
    got = query(
        store, "SELECT status, n_assignments, error, finished_at IS NOT NULL FROM clusteringresult"
    )
    assert got == [("completed", 30, None, True)]
    sizes = query(store, "SELECT cluster, size FROM clustersize ORDER BY cluster")
    assert [s for _, s in sizes] == completed.cluster_sizes


def test_ids_are_deterministic_and_survive_a_rebuild(store: EventStore) -> None:
    run = make_run(store, 12, seed=5)
    projections.catch_up_all(store)
    got = query(store, "SELECT id, seq, cluster_id, cluster, embedding_id FROM embeddingcluster")
    ids, _, _ = rows(12, 3, 5)
    assert len(got) == 12
    for id_, seq, cluster_id, cluster, embedding_id in got:
        assert uuid.UUID(str(id_)) == projections.assignment_id(run, seq)
        assert uuid.UUID(str(cluster_id)) == projections.cluster_id(run, cluster)
        assert uuid.UUID(str(embedding_id)).bytes == ids[seq - 3].tobytes()  # rows start at 3
    before = snapshot(store)
    projections.rebuild(store)
    assert snapshot(store) == before


def test_cluster_sizes_and_centroids(store: EventStore) -> None:
    run = make_run(store, 40, k=4, seed=6)
    projections.catch_up_all(store, quiet=True)
    completed = truth(store)[run].completed
    assert completed is not None
    got = query(store, "SELECT cluster, size, centroid FROM clustersize ORDER BY cluster")
    assert [s for _, s, _ in got] == completed.cluster_sizes
    centroids = np.arange(8, dtype=np.float32).reshape(4, 2) + 6
    assert [bytes(c) for _, _, c in got] == [row.tobytes() for row in centroids]


def test_catch_up_resumes_from_the_checkpoint(store: EventStore) -> None:
    make_run(store, 10, seed=7)
    first = projections.catch_up(store)
    head = store.max_position()
    assert first == {"clusteringresult": head, "embeddingcluster": head}
    assert projections.catch_up(store) == {"clusteringresult": 0, "embeddingcluster": 0}
    make_run(store, 5, seed=8)
    again = projections.catch_up(store, ["embeddingcluster"], batch_events=3)
    assert again == {"embeddingcluster": store.max_position() - head}
    states = {s.name: (s.checkpoint, s.lag, s.state) for s in projections.status(store)}
    assert states == {
        "clusteringresult": (head, store.max_position() - head, "behind"),
        "embeddingcluster": (store.max_position(), 0, "up_to_date"),
    }


def test_legacy_id_becomes_the_clustering_result_id(store: EventStore) -> None:
    legacy = uuid.uuid4()
    run = make_run(store, 6, seed=9, legacy_id=legacy, imported_from="old.db")
    projections.catch_up_all(store)
    got = query(store, "SELECT DISTINCT clustering_result_id, run_id FROM embeddingcluster")
    assert [(uuid.UUID(str(a)), uuid.UUID(str(b))) for a, b in got] == [(legacy, run)]
    got = query(store, "SELECT id, run_id FROM clusteringresult")
    assert [(uuid.UUID(str(a)), uuid.UUID(str(b))) for a, b in got] == [(legacy, run)]


def test_non_canonical_assignment_events_are_projected(store: EventStore) -> None:
    run = uuid.uuid4()
    started = RunStarted(
        model="m",
        algorithm="a",
        n_embeddings=3,
        dim=2,
        k=2,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    store.append(run, [started], expected_seq=0)
    ids, labels, dist = rows(3, 2, 12)
    canonical = pack_assignments(ids, labels, dist)
    odd = msgspec.msgpack.encode([ids[1].tobytes(), int(labels[1]), float(dist[1])])
    store.recorder.append_events(
        run,
        [
            RawEvent(3, 1, canonical.payload(0)),
            RawEvent(3, 1, odd),
            RawEvent(3, 1, canonical.payload(2)),
        ],
        expected_seq=1,
    )
    from clusterstore.eventstore import AssignmentDigest, RunCompleted

    digest = AssignmentDigest.for_run(started)
    digest.update(canonical.data, 3)
    store.append(
        run,
        [
            RunCompleted(
                count=3, digest=digest.hexdigest(), finished_at=datetime(2026, 1, 2, tzinfo=UTC)
            )
        ],
    )
    projections.catch_up_all(store)
    assert projections.read_model_digest(store, run) == (3, digest.hexdigest())
    assert query(store, "SELECT n_assignments, duration FROM clusteringresult") == [(3, 86400.0)]


def test_a_held_projection_refuses_rebuild_and_follow(store: EventStore) -> None:
    make_run(store, 5, seed=13)
    projections.catch_up_all(store)
    with store.recorder.connection() as conn:
        runner = Runner(store, projections.PROJECTIONS["embeddingcluster"](store), conn)
        assert runner.lock.try_acquire()
        try:
            with pytest.raises(DatabaseBusyError) as info:
                projections.rebuild(store, ["embeddingcluster"])
            message = str(info.value)
            assert message.startswith(
                "projection embeddingcluster is already being updated by another runner ("
            )
            assert message.endswith(
                "); stop it first, or wait for it to finish (`clusterstore projections "
                "status` shows it)"
            )
            with pytest.raises(DatabaseBusyError):
                projections.follow(store, ["embeddingcluster"], stop=lambda: True)
            # up to date already: a second catch-up has nothing to wait for
            assert projections.catch_up(store, wait=0) == {
                "clusteringresult": 0,
                "embeddingcluster": 0,
            }
            make_run(store, 5, seed=14)
            with pytest.raises(DatabaseBusyError, match="did not reach position"):
                projections.catch_up(store, ["embeddingcluster"], wait=0.3)
            status = {s.name: s.runner for s in projections.status(store)}
            assert status["clusteringresult"] is None
            assert status["embeddingcluster"] is not None
        finally:
            runner.lock.release()
    assert projections.catch_up(store, ["embeddingcluster"])["embeddingcluster"] > 0


def test_a_foreign_table_with_a_read_model_name_is_refused(store: EventStore) -> None:
    with store.recorder.transaction(write=True) as conn:
        conn.exec_driver_sql("CREATE TABLE embeddingcluster (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaError) as info:
        projections.catch_up_all(store)
    assert str(info.value) == (
        "the database already has a table or view named 'embeddingcluster' that clusterstore "
        "did not create; the embeddingcluster read model needs that name (rename it, or keep "
        "the store in another database)"
    )
    assert query(store, "SELECT count(*) FROM embeddingcluster") == [(0,)]


def test_a_layout_version_change_rebuilds(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(store, 9, seed=15)
    projections.catch_up_all(store)
    before = snapshot(store)
    cls = projections.PROJECTIONS["embeddingcluster"]
    monkeypatch.setattr(cls, "version", cls.version + 1)
    projections.catch_up_all(store)
    generations = {s.name: s.generation for s in projections.status(store)}
    assert generations == {"clusteringresult": 1, "embeddingcluster": 2}
    assert snapshot(store) == before


@pytest.mark.parametrize("other", ["pj_crowd_g1", "pj_cr_archive_g1", "pj_ec_runaway_g1"])
def test_a_rebuild_drops_only_its_own_generation_tables(store: EventStore, other: str) -> None:
    """Generation clean-up drops a projection's own tables only, never another read
    model's whose name merely starts the same way (``pj_crowd_...`` is not
    ``clusteringresult``'s ``pj_cr_g<N>``)."""
    with store.recorder.transaction(write=True) as conn:
        conn.exec_driver_sql(f"CREATE TABLE {other} (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(f"INSERT INTO {other} (id) VALUES (7)")
    make_run(store, 9, seed=16)
    projections.catch_up_all(store)
    projections.rebuild(store, ["clusteringresult"])
    projections.rebuild(store, ["embeddingcluster"])
    assert {s.name: s.generation for s in projections.status(store)} == {
        "clusteringresult": 2,
        "embeddingcluster": 2,
    }
    assert query(store, f"SELECT id FROM {other}") == [(7,)]
    with store.recorder.transaction() as conn:
        tables = set(inspect(conn).get_table_names())
    assert not {"pj_cr_g1", "pj_ec_run_g1", "pj_ec_assignment_g1", "pj_ec_cluster_g1"} & tables

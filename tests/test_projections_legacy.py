"""Legacy compatibility: the SQL users ran against their SQLModel tables works on the read
model, for runs made here and for runs imported from a legacy database (same rows, same
ids)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlmodel import Session, select

from clusterstore import projections
from clusterstore.eventstore import EventStore, RunCompleted
from clusterstore.legacy import LegacySource, import_legacy
from tests.legacy_models import ClusteringResult, EmbeddingCluster, uuid7
from tests.pj_util import make_run, query, snapshot


@contextmanager
def legacy_session(store: EventStore) -> Iterator[Session]:
    """A SQLModel session on the store's database, as the users' existing code opens one."""
    engine = create_engine(store.recorder.url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def rows_of(session: Session, result_id: uuid.UUID) -> list[EmbeddingCluster]:
    """The legacy query: a result's rows in ``embeddingcluster``."""
    where = EmbeddingCluster.clustering_result_id == result_id
    return list(session.exec(select(EmbeddingCluster).where(where)).all())


def test_sqlmodel_query_returns_exactly_the_runs_rows(store: EventStore) -> None:
    run = make_run(store, 25, seed=10)
    other = make_run(store, 8, seed=11)
    make_run(store, 8, seed=12, recorded=3)  # running: invisible
    projections.catch_up_all(store)

    with legacy_session(store) as session:
        found = rows_of(session, run)
        assert len(found) == 25
        assert {r.clustering_result_id for r in found} == {run}
        expected = {projections.assignment_id(run, seq) for seq in range(3, 28)}
        assert {r.id for r in found} == expected
        one = session.get(EmbeddingCluster, projections.assignment_id(other, 5))
        assert one is not None and one.clustering_result_id == other
        results = session.exec(select(ClusteringResult.id)).all()  # type: ignore[call-overload]
        count = (
            session.connection()
            .execute(
                text("SELECT count(*) FROM embeddingcluster WHERE clustering_result_id = :r"),
                {"r": run.hex if store.backend == "sqlite" else run},  # as Uuid binds it
            )
            .scalar()
        )
    assert count == 25
    assert len(results) == 3  # clusteringresult has every run, running ones too


def build_legacy(path: Path) -> tuple[uuid.UUID, uuid.UUID, list[EmbeddingCluster]]:
    """A legacy SQLModel database: one result with 150 rows in 4 clusters, one empty."""
    engine = create_engine(f"sqlite:///{path}")
    ClusteringResult.metadata.create_all(
        engine,
        tables=[ClusteringResult.__table__, EmbeddingCluster.__table__],  # type: ignore[attr-defined]
    )
    rng = np.random.default_rng(5)
    good = ClusteringResult(model_name="mpnet", algorithm="kmeans", n_clusters=4, n_embeddings=150)
    empty = ClusteringResult(model_name="roberta", algorithm="kmeans", n_clusters=4, n_embeddings=9)
    clusters = [uuid7() for _ in range(4)]
    rows = [
        EmbeddingCluster(
            embedding_id=uuid.UUID(bytes=rng.bytes(16)),
            clustering_result_id=good.id,
            cluster_id=clusters[int(rng.integers(0, 4))],
        )
        for _ in range(150)
    ]
    with Session(engine, expire_on_commit=False) as s:
        s.add_all([good, empty, *rows])
        s.commit()
    engine.dispose()
    return good.id, empty.id, rows


def test_an_imported_run_answers_the_old_queries_with_the_old_ids(
    store: EventStore, tmp_path: Path
) -> None:
    good, empty, rows = build_legacy(tmp_path / "legacy.db")
    with LegacySource(tmp_path / "legacy.db") as source:
        import_legacy(source, store)
    projections.catch_up_all(store)

    with legacy_session(store) as session:
        found = rows_of(session, good)
        none = rows_of(session, empty)

    def key(r: EmbeddingCluster) -> tuple[uuid.UUID, ...]:
        return (r.id, r.embedding_id, r.clustering_result_id, r.cluster_id)

    assert sorted(map(key, found)) == sorted(map(key, rows))
    assert none == []
    # (runs.read_progress cannot read imported 47-byte assignments: the events, directly)
    done = [e for _, e in store.read(good) if isinstance(e, RunCompleted)]
    assert projections.read_model_digest(store, good) == (150, done[0].digest)
    assert projections.read_model_digest(store, empty) is None
    sizes = query(store, "SELECT cluster_id, size FROM clustersize")
    by_cluster: dict[uuid.UUID, int] = {}
    for r in rows:
        by_cluster[r.cluster_id] = by_cluster.get(r.cluster_id, 0) + 1
    assert {uuid.UUID(str(c)): n for c, n in sizes} == by_cluster
    statuses = {
        uuid.UUID(str(i)): s for i, s in query(store, "SELECT id, status FROM clusteringresult")
    }
    assert statuses == {good: "completed", empty: "failed"}

    before = snapshot(store)
    projections.rebuild(store)
    assert snapshot(store) == before

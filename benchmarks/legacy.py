"""The legacy pattern: what users do today, with SQLModel (the ORM, for this baseline only).

Two SQLModel tables as legacy code has them, ``clusteringresult`` and ``embeddingcluster``
(``id``, ``embedding_id``, ``clustering_result_id``, ``cluster_id``; UUIDs stored by
SQLAlchemy's ``Uuid`` type: CHAR(32) on SQLite, ``uuid`` on PostgreSQL), each row with a
client-side UUIDv7 primary key made in Python. Timed: one ``ClusteringResult``, then one
``EmbeddingCluster`` object per assignment added to the session in a loop, a flush every
1,000 rows, one commit at the end. SQLite keeps SQLModel's defaults (rollback journal), as
a user's ``create_engine("sqlite:///...")`` does.

``sqlmodel`` is a benchmark/test extra (``pip install 'clusterstore[bench]'``), never a
runtime dependency: it is imported only inside the step.
"""

import uuid  # no `from __future__ import annotations`: SQLModel reads the annotations
from typing import Any

from .core import Clock, Measurement, require
from .synthetic import K, assignment_batches

FLUSH_EVERY = 1_000
CAP = 200_000  # the ORM path runs at ~6k rows/s: a larger n only makes the bench slower


def _models() -> tuple[Any, Any, Any]:
    """The SQLModel classes, defined on first use (sqlmodel is an optional extra)."""
    from datetime import datetime

    import uuid_utils.compat as uu
    from sqlmodel import Field, SQLModel

    class ClusteringResult(SQLModel, table=True):
        __tablename__ = "clusteringresult"
        id: uuid.UUID = Field(default_factory=uu.uuid7, primary_key=True)
        model: str
        k: int
        created_at: datetime

    class EmbeddingCluster(SQLModel, table=True):
        __tablename__ = "embeddingcluster"
        id: uuid.UUID = Field(default_factory=uu.uuid7, primary_key=True)
        embedding_id: uuid.UUID
        clustering_result_id: uuid.UUID = Field(foreign_key="clusteringresult.id", index=True)
        cluster_id: uuid.UUID

    return SQLModel, ClusteringResult, EmbeddingCluster


def _engine_url(backend: str, db_url: str) -> str:
    return f"sqlite:///{db_url}" if backend == "sqlite" else db_url


def run(backend: str, n: int, db_url: str) -> Measurement:
    require("sqlmodel", "the legacy baseline: pip install 'clusterstore[bench]'")
    from datetime import UTC, datetime

    from sqlmodel import Session, create_engine

    model, result_cls, row_cls = _models()
    engine = create_engine(_engine_url(backend, db_url))
    model.metadata.create_all(engine)
    embedding_ids, labels = [], []
    for batch in assignment_batches(n):  # the whole input, as UUID objects, off the clock
        embedding_ids += [uuid.UUID(bytes=b) for b in batch.ids.tolist()]
        labels += batch.labels.tolist()
    cluster_ids = [uuid.uuid4() for _ in range(K)]
    clock = Clock()
    with clock.running(), Session(engine) as session:
        result = result_cls(model="bench", k=K, created_at=datetime.now(UTC))
        session.add(result)
        for i in range(n):
            session.add(
                row_cls(
                    embedding_id=embedding_ids[i],
                    clustering_result_id=result.id,
                    cluster_id=cluster_ids[labels[i]],
                )
            )
            if (i + 1) % FLUSH_EVERY == 0:
                session.flush()
        session.commit()
    engine.dispose()
    return clock.measurement(n)

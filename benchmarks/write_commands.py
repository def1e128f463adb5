"""Steps for the commands that make or fill a store: ``init``, ``demo``, ``import-legacy``
and ``runs resume``, timed as a user runs them: the CLI command in process (as in
``audit_commands``), what it reads made off the clock.

- ``init``: a new database; timed: ``init`` (the tables, the read-model views). One call
  (the n is fixed at 1): a fresh database per repetition is what the command is for.
- ``demo``: a new database; timed: ``demo`` (three models' synthetic embeddings written to
  files, clustered, recorded and projected). Its size is the demo's own (``DEMO_N``
  assignments), whatever ``--n``.
- ``import_legacy``: the legacy step's two tables (``clusteringresult``,
  ``embeddingcluster``: SQLAlchemy ``Uuid`` columns, an index on clustering_result_id)
  holding one result of n rows, written with Core off the clock; on SQLite a file of its
  own, on PostgreSQL a schema of its own beside the store's (dropped afterwards); timed:
  ``import-legacy SOURCE`` (the read, the run's events, the catch-up). Events: n.
- ``runs_resume``: n x 384 float32 embeddings in a ``.npy`` (written a batch at a time),
  clustered (k = 100) by ``cluster_file`` until half the rows are written, then stopped
  as a crash stops it; the read models caught up; timed: ``runs resume RUN`` (the log
  read, the input re-read for its digest, the missing rows assigned and appended, the
  read models following). Events: the rows appended.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import uuid_utils.compat as uu
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    insert,
)
from sqlalchemy.engine import make_url

from clusterstore import projections
from clusterstore.eventstore import EventStore

from . import databases
from .audit_commands import _timed_json
from .catalog import DEMO_N
from .core import BATCH, Measurement, require
from .synthetic import K, assignment_batches, write_embeddings


def init(backend: str, n: int, db_url: str) -> Measurement:
    clock, doc = _timed_json(db_url, "init")
    if "db_url" not in doc:
        raise AssertionError(f"init answered {doc}")
    return clock.measurement(1)


def demo(backend: str, n: int, db_url: str) -> Measurement:
    require("clustering", "demo clusters with the clustering package")
    clock, doc = _timed_json(db_url, "demo", "--quiet")
    made = sum(r["n_assignments"] for r in doc["runs"])
    if made != DEMO_N:
        raise AssertionError(f"demo recorded {made:,} assignments, expected {DEMO_N:,}")
    return clock.measurement(made, f"{len(doc['runs'])} runs")


# ---------------------------------------------------------------- import-legacy


def _legacy_tables() -> tuple[MetaData, Table, Table]:
    """The legacy step's SQLModel tables (``legacy._models``), in Core."""
    meta = MetaData()
    results = Table(
        "clusteringresult",
        meta,
        Column("id", Uuid, primary_key=True),
        Column("model", String, nullable=False),
        Column("k", Integer, nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    rows = Table(
        "embeddingcluster",
        meta,
        Column("id", Uuid, primary_key=True),
        Column("embedding_id", Uuid, nullable=False),
        Column("clustering_result_id", Uuid, ForeignKey("clusteringresult.id"), index=True),
        Column("cluster_id", Uuid, nullable=False),
    )
    return meta, results, rows


def _fill_legacy(url: str, n: int) -> None:
    """One legacy result of n rows, as the legacy step writes them (ids uuid7)."""
    meta, results, rows = _legacy_tables()
    engine = create_engine(url)
    try:
        meta.create_all(engine)
        result_id = uu.uuid7()
        clusters = [uuid.uuid4() for _ in range(K)]
        with engine.begin() as conn:
            conn.execute(
                insert(results),
                {"id": result_id, "model": "bench", "k": K, "created_at": datetime.now(UTC)},
            )
        for b in assignment_batches(n):
            batch = [
                {
                    "id": uu.uuid7(),
                    "embedding_id": uuid.UUID(bytes=e),
                    "clustering_result_id": result_id,
                    "cluster_id": clusters[label],
                }
                for e, label in zip(b.ids.tolist(), b.labels.tolist(), strict=True)
            ]
            with engine.begin() as conn:
                conn.execute(insert(rows), batch)
    finally:
        engine.dispose()


@contextmanager
def _legacy_source(backend: str, db_url: str) -> Iterator[tuple[str, str]]:
    """(the URL to write the legacy tables with, the SOURCE argument naming them): a SQLite
    file of its own, or a PostgreSQL schema of its own in the store's database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            path = str(Path(d) / "legacy.db")
            yield f"sqlite:///{path}", path
        return
    base = make_url(db_url).difference_update_query(["options"])
    url, schema = databases.create_pg_schema(base)
    try:
        yield url, url
    finally:
        databases.drop_pg_schema(base, schema)


def import_legacy(backend: str, n: int, db_url: str) -> Measurement:
    with _legacy_source(backend, db_url) as (url, source):
        _fill_legacy(url, n)
        clock, doc = _timed_json(db_url, "import-legacy", source, "--quiet")
    if doc["n_assignments"] != n:
        raise AssertionError(f"import-legacy imported {doc['n_assignments']}, expected {n}")
    return clock.measurement(n)


# ---------------------------------------------------------------- runs resume


class _Crash(Exception):
    pass


class _StopAt:
    """A reporter whose progress callback raises once ``rows`` assignments are written:
    the run stops between two batches, as a killed writer leaves it."""

    def __init__(self, rows: int):
        self.rows = rows
        self.written = 0

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        def tick(count: int) -> None:
            if name.startswith("assigning"):
                self.written += count
                if self.written >= self.rows:
                    raise _Crash

        yield tick

    def warn(self, message: str) -> None:
        pass


def runs_resume(backend: str, n: int, db_url: str) -> Measurement:
    require("clustering", "runs resume re-assigns with the clustering package")
    from clusterstore.clustering import ClusterSettings, cluster_file

    batch = min(BATCH, max(1, n // 10))  # the default batch (100k) from n = 1M on
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "embeddings.npy"
        write_embeddings(str(path), n)
        settings = ClusterSettings(model="bench", k=min(K, n), seed=0, batch_size=batch)
        with EventStore.open(db_url) as store:
            with suppress(_Crash):  # the run stops halfway (a completed one fails resume)
                cluster_file(store, path, settings, reporter=_StopAt(n // 2))
            (run,) = store.runs()
            projections.catch_up_all(store)
        clock, doc = _timed_json(db_url, "runs", "resume", str(run.run_id), "--quiet")
    if doc["n_assignments"] != n or doc["status"] != "completed":
        raise AssertionError(f"resume left {doc['n_assignments']} of {n}, {doc['status']}")
    return clock.measurement(
        doc["n_appended"], f"resumed at row {doc['resumed_from']:,} of {n:,}; input re-read"
    )

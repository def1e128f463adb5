"""Naive ceilings: the same rows, already encoded, written with the raw driver the way a
competent user would, with no clusterstore code on the clock.

- ``run`` (step ``ceiling``): cs_events-shaped rows ``(run_id, seq, type, version,
  payload)``, primary key (run_id, seq). SQLite: ``sqlite3`` ``executemany`` of a stream of
  tuples, one transaction per 100k rows, WAL and the store's own pragmas. PostgreSQL:
  psycopg 3 binary ``COPY`` with ``Copy.write_row`` per row, one COPY and transaction per
  100k rows.
- ``run_read_model`` (step ``ceiling_replay``): the read-model rows a replay produces
  (legacy ``embeddingcluster`` columns plus cluster index and distance; UUIDs as CHAR(32) on
  SQLite as SQLAlchemy's ``Uuid`` stores them, ``uuid`` on PostgreSQL), the same way.

Off the clock, per batch of 100k: the encoded payloads (one ``bytes`` per event) or the
read-model values. On the clock: building each row tuple and handing it to the driver
(that per-row work is the point of the comparison), and the commit.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any

import numpy as np

from clusterstore.eventstore import AssignmentRecorded

from .core import Clock, Measurement
from .databases import libpq_dsn
from .synthetic import SEED, K, assignment_batches, payloads

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -65536",
)
_SQLITE_EVENTS = (
    "CREATE TABLE ev (run_id BLOB NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL, "
    "version INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
)
_PG_EVENTS = (
    "CREATE TABLE ev (run_id uuid NOT NULL, seq bigint NOT NULL, type smallint NOT NULL, "
    "version smallint NOT NULL, payload bytea NOT NULL, PRIMARY KEY (run_id, seq))"
)
_SQLITE_READ = (
    "CREATE TABLE embeddingcluster (id CHAR(32) PRIMARY KEY, embedding_id CHAR(32) NOT NULL, "
    "clustering_result_id CHAR(32) NOT NULL, cluster_id CHAR(32) NOT NULL, "
    "cluster INTEGER NOT NULL, distance REAL NOT NULL)"
)
_PG_READ = (
    "CREATE TABLE embeddingcluster (id uuid PRIMARY KEY, embedding_id uuid NOT NULL, "
    "clustering_result_id uuid NOT NULL, cluster_id uuid NOT NULL, "
    "cluster integer NOT NULL, distance real NOT NULL)"
)
_EVENT_TYPES = ["uuid", "int8", "int2", "int2", "bytea"]
_READ_TYPES = ["uuid", "uuid", "uuid", "uuid", "int4", "float4"]


def _event_rows(run_id: Any, n: int) -> Iterator[Iterator[tuple[Any, ...]]]:
    """Per batch: the encoded payloads (made when the batch is drawn, off the clock), and a
    lazy stream of row tuples over them (built on the clock, as the driver consumes it)."""
    t, v = AssignmentRecorded.TYPE, AssignmentRecorded.VERSION
    for batch in assignment_batches(n):
        data = payloads(batch)
        lo = batch.lo
        yield zip(repeat(run_id), range(lo + 1, lo + 1 + len(data)), repeat(t), repeat(v), data)


def _read_rows(n: int, as_hex: bool) -> Iterator[Iterator[tuple[Any, ...]]]:
    """Per batch: the read-model values (row id, embedding id, result id, cluster id,
    cluster index, distance), and a lazy stream of row tuples over them."""
    rng = np.random.default_rng(SEED + 1)
    result = uuid.UUID(bytes=rng.bytes(16))
    cluster_ids = [uuid.UUID(bytes=rng.bytes(16)) for _ in range(K)]
    for batch in assignment_batches(n):
        m = len(batch.ids)
        ids: list[Any] = [uuid.UUID(bytes=rng.bytes(16)) for _ in range(m)]
        emb: list[Any] = [uuid.UUID(bytes=b) for b in batch.ids.tolist()]
        labels = batch.labels.tolist()
        clusters: list[Any] = [cluster_ids[c] for c in labels]
        results: list[Any] = [result] * m
        if as_hex:
            ids, emb, clusters, results = (
                [u.hex for u in col] for col in (ids, emb, clusters, results)
            )
        yield zip(ids, emb, results, clusters, labels, batch.distances.tolist(), strict=True)


def _sqlite_load(path: str, ddl: str, insert: str, rows: Iterable[Iterator[Any]]) -> Clock:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in _SQLITE_PRAGMAS:
        conn.execute(pragma)
    conn.execute(ddl)
    clock = Clock()
    for batch in rows:
        with clock.running():
            conn.execute("BEGIN")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
    conn.close()
    return clock


def _pg_load(db_url: str, ddl: str, copy_sql: str, types: list[str], rows: Iterable[Any]) -> Clock:
    import psycopg

    clock = Clock()
    with psycopg.connect(libpq_dsn(db_url)) as conn:
        conn.execute(ddl)
        conn.commit()
        for batch in rows:
            with clock.running():
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for row in batch:
                        copy.write_row(row)
                conn.commit()
    return clock


def run(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``ceiling``: raw inserts of pre-encoded cs_events rows."""
    run_id = uuid.uuid4()
    if backend == "sqlite":
        insert = "INSERT INTO ev VALUES (?, ?, ?, ?, ?)"
        clock = _sqlite_load(db_url, _SQLITE_EVENTS, insert, _event_rows(run_id.bytes, n))
    else:
        copy = "COPY ev (run_id, seq, type, version, payload) FROM STDIN (FORMAT BINARY)"
        clock = _pg_load(db_url, _PG_EVENTS, copy, _EVENT_TYPES, _event_rows(run_id, n))
    return clock.measurement(n)


def run_read_model(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``ceiling_replay``: raw inserts of the rows a replay writes to embeddingcluster."""
    rows = _read_rows(n, as_hex=backend == "sqlite")
    if backend == "sqlite":
        insert = "INSERT INTO embeddingcluster VALUES (?, ?, ?, ?, ?, ?)"
        clock = _sqlite_load(db_url, _SQLITE_READ, insert, rows)
    else:
        copy = (
            "COPY embeddingcluster (id, embedding_id, clustering_result_id, cluster_id, "
            "cluster, distance) FROM STDIN (FORMAT BINARY)"
        )
        clock = _pg_load(db_url, _PG_READ, copy, _READ_TYPES, rows)
    return clock.measurement(n)

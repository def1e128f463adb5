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

Before the clock: the encoded payloads (one ``bytes`` per event) or read-model values.
On the clock: building each row tuple and handing it to the driver; that per-row Python
work is the point of the comparison.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any

from eventstore import AssignmentRecorded

from .core import Clock, Measurement, batches
from .databases import libpq_dsn
from .synthetic import K, assignments, payloads

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


def _event_rows(run_id: Any, lo: int, hi: int, data: list[bytes]) -> Iterator[tuple[Any, ...]]:
    t, v = AssignmentRecorded.TYPE, AssignmentRecorded.VERSION
    return zip(repeat(run_id), range(lo + 1, hi + 1), repeat(t), repeat(v), data[lo:hi])


def _sqlite_load(path: str, ddl: str, insert: str, rows: Iterable[Iterator[Any]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in _SQLITE_PRAGMAS:
        conn.execute(pragma)
    conn.execute(ddl)
    clock = Clock()
    with clock.running():
        for batch in rows:
            conn.execute("BEGIN")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
    conn.close()
    return clock.seconds


def _pg_load(db_url: str, ddl: str, copy_sql: str, types: list[str], rows: Iterable[Any]) -> float:
    import psycopg

    clock = Clock()
    with psycopg.connect(libpq_dsn(db_url)) as conn:
        conn.execute(ddl)
        conn.commit()
        with clock.running():
            for batch in rows:
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for row in batch:
                        copy.write_row(row)
                conn.commit()
    return clock.seconds


def run(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``ceiling``: raw inserts of pre-encoded cs_events rows."""
    data = payloads(assignments(n))
    run_id = uuid.uuid4()
    if backend == "sqlite":
        rows = (_event_rows(run_id.bytes, lo, hi, data) for lo, hi in batches(n))
        insert = "INSERT INTO ev VALUES (?, ?, ?, ?, ?)"
        return Measurement(n, _sqlite_load(db_url, _SQLITE_EVENTS, insert, rows))
    rows = (_event_rows(run_id, lo, hi, data) for lo, hi in batches(n))
    copy = "COPY ev (run_id, seq, type, version, payload) FROM STDIN (FORMAT BINARY)"
    return Measurement(n, _pg_load(db_url, _PG_EVENTS, copy, _EVENT_TYPES, rows))


def _read_values(n: int, as_hex: bool) -> list[list[Any]]:
    """Column lists of the read-model rows: id, embedding_id, result id, cluster_id,
    cluster index, distance."""
    data = assignments(n)
    result = uuid.uuid4()
    cluster_ids = [uuid.uuid4() for _ in range(K)]
    ids = [uuid.UUID(bytes=bytes(b)) for b in assignments(n, seed=1).ids.tolist()]
    emb = [uuid.UUID(bytes=bytes(b)) for b in data.ids.tolist()]
    labels = data.labels.tolist()
    cols: list[list[Any]] = [
        ids,
        emb,
        [result] * n,
        [cluster_ids[c] for c in labels],
        labels,
        data.distances.tolist(),
    ]
    if as_hex:
        cols[:4] = [[u.hex for u in col] for col in cols[:4]]
    return cols


def run_read_model(backend: str, n: int, db_url: str) -> Measurement:
    """Step ``ceiling_replay``: raw inserts of the rows a replay writes to embeddingcluster."""
    cols = _read_values(n, as_hex=backend == "sqlite")
    rows = (zip(*(c[lo:hi] for c in cols), strict=True) for lo, hi in batches(n))
    if backend == "sqlite":
        insert = "INSERT INTO embeddingcluster VALUES (?, ?, ?, ?, ?, ?)"
        return Measurement(n, _sqlite_load(db_url, _SQLITE_READ, insert, rows))
    copy = (
        "COPY embeddingcluster (id, embedding_id, clustering_result_id, cluster_id, cluster, "
        "distance) FROM STDIN (FORMAT BINARY)"
    )
    return Measurement(n, _pg_load(db_url, _PG_READ, copy, _READ_TYPES, rows))

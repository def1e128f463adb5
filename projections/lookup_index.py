"""The embedding-id lookup index of ``embeddingcluster``: an option, off by default.

With it, ``which`` and plain SQL ``SELECT ... FROM embeddingcluster WHERE embedding_id = ?``
are index lookups; the index is on the expression the view shows (``lower(hex(
embedding_id))``, CHAR(32) text, on SQLite; the native uuid on PostgreSQL), so the
planner serves the view's predicate from it. Without it they scan every assignment.

It is a choice because it costs replay, the store's main path (measured with
``python -m clusterstore.benchmarks.replay``, 2M events, median of 3: SQLite 245k -> 91k
events/s, PostgreSQL 212k -> 131k events/s). The setting is kept in ``pj_setting``; switching
it on builds the index on the current generation at once (one sorted build), and every
rebuild creates it after its bulk load.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, select

from clusterstore.eventstore.store import EventStore

from . import schema
from .schema import ec_tables

SETTING = "embeddingcluster.lookup_index"


def lookup_index_name(generation: int) -> str:
    return f"{ec_tables(generation).assignments.name}_embedding"


def lookup_index_enabled(conn: Connection, *, check_table: bool = True) -> bool:
    if check_table and not inspect(conn).has_table(schema.settings.name):
        return False
    t = schema.settings
    value = conn.execute(select(t.c.value).where(t.c.name == SETTING)).scalar()
    return value == "on"


def create_lookup_index(store: EventStore, conn: Connection, generation: int) -> None:
    """The index on the expression the view shows for ``embedding_id`` (the backend's
    ``sql_uuid_text``), so the planner serves the view's predicate from it."""
    a = ec_tables(generation).assignments.name
    column = store.sql_uuid_text("embedding_id")
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {lookup_index_name(generation)} ON {a} ({column})"
    )
    store.analyze_table(conn, a)


def drop_lookup_index(conn: Connection, generation: int) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {lookup_index_name(generation)}")

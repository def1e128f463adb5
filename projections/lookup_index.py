"""The lookup indexes of ``embeddingcluster``: an option, off by default.

With it, ``which`` and plain SQL ``SELECT ... FROM embeddingcluster WHERE embedding_id = ?``
and ``... WHERE id = ?`` (the legacy primary key) are index lookups; without it they scan
every assignment.

- ``embedding_id``: an index on the expression the view shows (``lower(hex(
  embedding_id))``, CHAR(32) text, on SQLite; the native uuid on PostgreSQL), so the
  planner serves the view's predicate from it.
- ``id``: the view derives it from the run's id prefix and the seq (``ids``), an
  expression over two tables that no index can serve. With the option on, every row stores
  its id in the assignment table's ``legacy_id`` column (until then only an imported row's
  legacy row id is there; a stored id equal to the derived one is the same row either
  way, see ``embeddingcluster._packed``), the view shows that column as ``id`` and an
  index on the same expression serves ``WHERE id = ?``. A generation's rows carry their ids
  only if it was built with the option on, from empty; ``IDS_SETTING`` names that
  generation (written when it is published), and switching the option on rebuilds the read
  model unless the current generation is that one.

It is a choice because it costs replay, the store's main path (both indexes are built after
a rebuild's load, the ids travel with every row); ``python -m
clusterstore.benchmarks.replay_lookup`` measures replay with and without it. The setting is
kept in ``pj_setting``.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, inspect, select, update

from clusterstore.eventstore.store import EventStore

from . import schema
from .schema import ec_tables

SETTING = "embeddingcluster.lookup_index"
IDS_SETTING = "embeddingcluster.stored_ids"  # the generation whose rows all store their id


def lookup_index_name(generation: int) -> str:
    return f"{ec_tables(generation).assignments.name}_embedding"


def id_index_name(generation: int) -> str:
    return f"{ec_tables(generation).assignments.name}_id"


def lookup_index_enabled(conn: Connection, *, check_table: bool = True) -> bool:
    return _read(conn, SETTING, check_table=check_table) == "on"


def stored_ids_generation(conn: Connection) -> int | None:
    """The generation whose rows all store their id (built with the option on), if any."""
    value = _read(conn, IDS_SETTING)
    return int(value) if value is not None else None


def write_setting(conn: Connection, name: str, value: str | None) -> None:
    t = schema.settings
    if value is None:
        conn.execute(delete(t).where(t.c.name == name))
    elif conn.execute(update(t).where(t.c.name == name).values(value=value)).rowcount == 0:
        conn.execute(t.insert().values(name=name, value=value))


def view_id(store: EventStore) -> str:
    """The view's ``id`` when every row stores it: the indexed expression."""
    return store.sql_uuid_text("a.legacy_id")


def create_lookup_index(store: EventStore, conn: Connection, generation: int) -> None:
    """The index on the expression the view shows for ``embedding_id`` (the backend's
    ``sql_uuid_text``), and, when the generation's rows store their ids, the one on the
    expression it shows for ``id``, so the planner serves the view's predicates from them."""
    a = ec_tables(generation).assignments.name
    column = store.sql_uuid_text("embedding_id")
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {lookup_index_name(generation)} ON {a} ({column})"
    )
    if stored_ids_generation(conn) == generation:
        stored = store.sql_uuid_text("legacy_id")
        conn.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {id_index_name(generation)} ON {a} ({stored})"
        )
    store.analyze_table(conn, a)


def drop_lookup_index(conn: Connection, generation: int) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {lookup_index_name(generation)}")
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {id_index_name(generation)}")


def _read(conn: Connection, name: str, *, check_table: bool = True) -> str | None:
    if check_table and not inspect(conn).has_table(schema.settings.name):
        return None
    t = schema.settings
    value = conn.execute(select(t.c.value).where(t.c.name == name)).scalar()
    return None if value is None else str(value)

"""The store's own tables, all on one MetaData.

- ``cs_meta``: key/value facts about the store (application name, schema version).
- ``cs_runs``: one row per run (stream), written once when its first event is appended.
- ``cs_events``: the log, keyed by (run_id, seq); WITHOUT ROWID on SQLite. No random key.
- ``cs_commits``: one row per append transaction. ``position`` is the global position of
  the commit's first event; event ``seq`` of that commit has global position
  ``position + (seq - first_seq)``. Positions are dense and allocated in commit order (see
  the backend modules), which gives the ordered, never-skipping global feed without a
  per-event position column (that column measured +45% disk on SQLite).
- ``cs_checkpoints``: per run, the state of its digest-version-2 fold at the last segment
  boundary its writer reached (``checkpoints``): an optimisation of resume, never trusted
  alone (``runs verify`` checks it against the log). Added after the first release: a store
  made before gets it on its first opening for writing (``clusterstore init``), never from
  a command that only reads.

Read models (projections) keep their own tables; nothing here knows about them.

Partitioning by run (PostgreSQL, ``clusterstore init --partitions N``): a table whose
``info`` names its run column under ``RUN_COLUMN`` (``cs_events`` here, the read model's
assignment tables) is created by such a store as ``N`` hash partitions on that column; its
primary key starts with the column, so every per-run read and write touches one partition.
The backend decides how (``Recorder.create_table``); nothing else changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Uuid,
    inspect,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

SCHEMA_VERSION = 1
APPLICATION = "clusterstore"


class UUIDType(TypeDecorator[uuid.UUID]):
    """A UUID: the database's native ``uuid`` type where it has one (PostgreSQL), else a
    16-byte BLOB (SQLite)."""

    impl = LargeBinary(16)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.supports_native_uuid:
            return dialect.type_descriptor(Uuid(as_uuid=True))
        return dialect.type_descriptor(LargeBinary(16))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            value = uuid.UUID(str(value))
        return value if dialect.supports_native_uuid else value.bytes

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None:
            return None
        if isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(bytes=bytes(value))


def utc(value: datetime) -> datetime:
    """A datetime read back from a ``DateTime(timezone=True)`` column, in UTC (SQLite gives
    it back naive, in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The integer type of sequence-like keys: INTEGER on SQLite, so that a WITHOUT ROWID key is
# the 64-bit integer SQLite stores compactly; BIGINT elsewhere.
KEY_INTEGER = BigInteger().with_variant(Integer, "sqlite")
# Table options of a table clustered on its primary key (ignored where every table is).
CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}

# ``Table.info`` key: the column a store partitioned by run partitions the table on.
RUN_COLUMN = "clusterstore_run_column"
# The partition counts ``init --partitions`` accepts: one partition is no partitioning,
# and beyond ~1000 PostgreSQL's planning and catalog cost per partition dominates.
MIN_PARTITIONS = 2
MAX_PARTITIONS = 1024

metadata = MetaData()

meta = Table(
    "cs_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "cs_runs",
    metadata,
    Column("run_id", UUIDType, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "cs_events",
    metadata,
    Column("run_id", UUIDType, nullable=False),
    Column("seq", KEY_INTEGER, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("version", SmallInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    PrimaryKeyConstraint("run_id", "seq", name="cs_events_pk"),
    info={RUN_COLUMN: "run_id"},
    **CLUSTERED,
)

commits = Table(
    "cs_commits",
    metadata,
    Column(
        "position",
        KEY_INTEGER,
        primary_key=True,
        autoincrement=False,
    ),
    Column("run_id", UUIDType, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("committed_at", DateTime(timezone=True), nullable=False),
)

checkpoints = Table(
    "cs_checkpoints",
    metadata,
    Column("run_id", UUIDType, primary_key=True),
    Column("rows", BigInteger, nullable=False),  # assignments covered: a segment boundary
    Column("seq", BigInteger, nullable=False),  # the seq of the last of them
    Column("chain", LargeBinary, nullable=False),  # the digest's chain value after them
    Column("sizes", LargeBinary, nullable=False),  # cluster sizes after them, int64 LE
    Column("n_noise", BigInteger, nullable=False),  # assignments labelled -1 among them
)

# Tables added after the first release: created when missing by any opening for writing
# (``Recorder.initialise``), so an older store is not "damaged" without them.
ADDED_TABLES = frozenset({"cs_checkpoints"})
STORE_TABLES = frozenset(t.name for t in metadata.sorted_tables) - ADDED_TABLES
IMMUTABLE_TABLES = ("cs_events", "cs_commits", "cs_runs")


def tables_present(conn: Connection, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are tables here, looked up one by one: on PostgreSQL listing
    every table's name (``get_table_names``) costs a catalog scan, ~20 ms on a server with
    many schemas, where a lookup by name is ~0.2 ms, and every command opens a store."""
    inspector = inspect(conn)
    return {name for name in names if inspector.has_table(name)}

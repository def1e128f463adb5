"""What a backend provides to the layers above the log (the read models, the projection
runner, followers), beside the log's own storage (``recorder.Recorder``, which inherits this).

Every method is about *how* this database does something the layers above need: load a
batch of read-model rows fast, upsert, replace a view, lock a runner for the life of a
connection, wait for new commits. The layers above ask the store (``EventStore``), never
test a dialect name.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Protocol

from sqlalchemy import Connection, Table
from sqlalchemy.schema import CreateIndex, CreateTable

from .rows import AssignmentRows


class Waker(Protocol):
    def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or earlier when new commits may have arrived."""


class SleepWaker:
    """Waits by sleeping: followers poll (the default for a backend without notifications)."""

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)


@contextmanager
def _sleeping() -> Iterator[Waker]:
    yield SleepWaker()


class BackendCapabilities(ABC):
    # ------------------------------------------------------------------ read models

    # Whether a read-model table that no reader sees yet may be bulk-loaded without its
    # primary key, the key added after the load (one sorted build instead of a B-tree insert
    # per row; a duplicate row then fails the key's creation instead of the load). SQLite:
    # no (a WITHOUT ROWID table is its primary key).
    primary_key_after_load: ClassVar[bool] = False
    # Whether a rebuild loads its new generation in the transaction that creates it and
    # swaps it in (one commit): a long write transaction must not block the log's writers,
    # and a load into tables created in the same transaction may be written frozen
    # (``insert_assignment_rows(fresh=True)``). SQLite: no (its one writer would hold off
    # every append for the whole rebuild).
    rebuild_in_one_transaction: ClassVar[bool] = False

    @abstractmethod
    def upsert_statement(self, table: Table) -> Any:
        """The INSERT for ``table`` with ``on_conflict_do_nothing``/``on_conflict_do_update``."""

    @abstractmethod
    def insert_assignment_rows(
        self, conn: Connection, table: Table, rows: AssignmentRows, *, fresh: bool = False
    ) -> None:
        """Bulk-load ``rows`` into ``table`` (columns ``rows.COLUMNS``): the fast path.
        ``fresh``: ``table`` was created in this transaction and nobody else can see it yet
        (``rebuild_in_one_transaction``), so the rows may be written as already visible to
        every later transaction where the database can (PostgreSQL's ``COPY FREEZE``)."""

    @abstractmethod
    def read_assignment_rows(
        self,
        conn: Connection,
        table: Table,
        run_key: int,
        *,
        after: int,
        limit: int,
        until: int | None = None,
    ) -> AssignmentRows:
        """The first ``limit`` rows of ``run_key`` with ``after < seq <= until`` (no upper
        bound when None) in ``table`` (a read-model assignment table, columns
        ``rows.COLUMNS``), in seq order, read set-based: the database aggregates the
        columns, no Python object per row. A bounded range is a bounded key-range read
        whatever plan the statistics suggest."""

    @abstractmethod
    def sql_uuid_text(self, expr: str, *, nullable: bool = False) -> str:
        """SQL showing a 16-byte ``UUIDType`` column ``expr`` as SQLAlchemy's ``Uuid``
        shows UUIDs on this database (NULL stays NULL when ``nullable``)."""

    @abstractmethod
    def sql_derived_uuid(self, prefix: str, number: str) -> str:
        """SQL for the ``Uuid`` made of a 16-hex-digit ``prefix`` and ``number | 1 << 63``
        in 16 hex digits (``projections.ids``)."""

    def create_table(self, conn: Connection, table: Table, *, indexes: bool = True) -> None:
        """Create ``table`` (and, with ``indexes``, its secondary indexes). A table whose
        ``info`` names a run column (``schema.RUN_COLUMN``) is partitioned by it where the
        store is (``partitions``); elsewhere it is a plain table."""
        conn.execute(CreateTable(table, include_foreign_key_constraints=[]))
        if indexes:
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))

    def partitions(self, conn: Connection) -> int | None:
        """How many hash partitions by run the store's log has (None: not partitioned)."""
        return None

    def replace_view(self, conn: Connection, name: str, select_sql: str) -> None:
        """Point the view ``name`` at ``select_sql`` (readers switch when the txn commits)."""
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE VIEW {name} AS {select_sql}")

    def prepare_index_build(self, conn: Connection) -> None:
        """Before building the keys and indexes of a freshly loaded generation, in the
        caller's transaction (e.g. more sort memory for it): by default nothing."""
        return None

    def analyze_table(self, conn: Connection, name: str) -> None:
        """Refresh the planner's statistics of a freshly loaded table (if it keeps any)."""
        return None

    def drop_tables(self, conn: Connection, names: list[str]) -> None:
        """Drop the tables (if they exist)."""
        for name in names:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')

    # ------------------------------------------------------------------ waiting and locks

    def commit_waker(self) -> AbstractContextManager[Waker]:
        """A waker whose ``wait`` may end early when new commits arrive (default: sleeps)."""
        return _sleeping()

    def try_session_lock(self, conn: Connection, name: str) -> bool:
        """Take the session lock ``name`` on ``conn`` without waiting (``has_session_locks``)."""
        raise NotImplementedError(f"{type(self).__name__} has no session locks")

    def release_session_lock(self, conn: Connection, name: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no session locks")

    def session_lock_holder(self, conn: Connection, name: str) -> str | None:
        """Who holds the session lock ``name`` (for messages), or None."""
        raise NotImplementedError(f"{type(self).__name__} has no session locks")

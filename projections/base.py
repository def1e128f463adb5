"""What every projection provides to the runner.

A projection owns a set of generation tables (``schema``) and the public views over the
current generation. The runner calls ``apply`` with a batch of feed blocks inside the
transaction that also advances the checkpoint, so a projection never commits on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import Connection, Table, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from clusterstore.eventstore.feed import FeedBlock

from . import schema


class Projection(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the layout changes: the runner then rebuilds
    reads_assignments: ClassVar[bool]  # whether ``apply`` needs the assignment payloads
    views: ClassVar[tuple[str, ...]]  # the public names readers query

    def __init__(self, dialect: str):
        self.dialect = dialect

    @abstractmethod
    def tables(self, generation: int) -> list[Table]:
        """The generation's tables, in creation order."""

    @abstractmethod
    def publish(self, conn: Connection, generation: int) -> None:
        """Point the public views at ``generation`` (readers switch when the txn commits)."""

    @abstractmethod
    def apply(self, conn: Connection, generation: int, blocks: list[FeedBlock]) -> None:
        """Apply a batch of the feed (in position order) to the generation's tables."""

    def generation_of(self, table_name: str) -> int | None:
        """The generation ``table_name`` belongs to if it is one of this projection's
        tables (exactly ``<name>_g<N>`` for one of ``tables``' names), else None."""
        bases = {schema.base_name(t.name) for t in self.tables(0)}
        return schema.generation_of(table_name, bases)

    def create(self, conn: Connection, generation: int, *, indexes: bool = True) -> None:
        """Create the generation's tables; secondary indexes now or (bulk load) later."""
        for table in self.tables(generation):
            conn.execute(CreateTable(table, include_foreign_key_constraints=[]))
        if indexes:
            self.create_indexes(conn, generation)

    def create_indexes(self, conn: Connection, generation: int) -> None:
        for table in self.tables(generation):
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"ANALYZE {table.name}")

    def drop_tables(self, conn: Connection, names: list[str]) -> None:
        """Drop an old generation. On SQLite without ``secure_delete`` (Debian builds turn it
        on): zeroing every freed page of a 10M-row table writes it all once more and held
        ~350 MB; the rows are copies of the log, which stays in the same file anyway."""
        if not names:
            return
        secure = None
        if self.dialect == "sqlite":
            secure = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
            conn.exec_driver_sql("PRAGMA secure_delete = OFF")
        try:
            for name in names:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
        finally:
            if secure is not None:
                conn.exec_driver_sql(f"PRAGMA secure_delete = {int(secure)}")

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT, with ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)


class Checkpoint(NamedTuple):
    name: str
    generation: int
    version: int
    position: int
    updated_at: datetime


def read_checkpoint(conn: Connection, name: str) -> Checkpoint | None:
    t = schema.checkpoints
    row = conn.execute(
        select(t.c.name, t.c.generation, t.c.version, t.c.position, t.c.updated_at).where(
            t.c.name == name
        )
    ).first()
    if row is None:
        return None
    at = row[4] if row[4].tzinfo else row[4].replace(tzinfo=UTC)
    return Checkpoint(row[0], int(row[1]), int(row[2]), int(row[3]), at)


def current_generation(conn: Connection, name: str) -> int | None:
    """The generation readers of projection ``name`` see, or None if it was never built."""
    if not inspect(conn).has_table(schema.checkpoints.name):
        return None
    cp = read_checkpoint(conn, name)
    return cp.generation if cp else None

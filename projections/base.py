"""What every projection provides to the runner.

A projection owns a set of generation tables (``schema``) and the public views over the
current generation. The runner calls ``apply`` with a batch of feed blocks inside the
transaction that also advances the checkpoint, so a projection never commits on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from sqlalchemy import Column, Connection, MetaData, Table, inspect, select
from sqlalchemy.schema import CreateIndex

from clusterstore.eventstore.feed import FeedBlock
from clusterstore.eventstore.schema import utc
from clusterstore.eventstore.store import EventStore

from . import schema


class Projection(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the layout changes: the runner then rebuilds
    reads_assignments: ClassVar[bool]  # whether ``apply`` needs the assignment payloads
    views: ClassVar[tuple[str, ...]]  # the public names readers query

    def __init__(self, store: EventStore):
        self.store = store  # how this database loads rows, upserts and replaces views
        # the generation created in the transaction that is loading it (a rebuild in one
        # transaction, ``rebuild_in_one_transaction``): its bulk tables may be loaded frozen
        self.fresh_generation: int | None = None

    @abstractmethod
    def tables(self, generation: int) -> list[Table]:
        """The generation's tables, in creation order."""

    @abstractmethod
    def publish(self, conn: Connection, generation: int) -> None:
        """Point the public views at ``generation`` (readers switch when the txn commits)."""

    @abstractmethod
    def apply(self, conn: Connection, generation: int, blocks: list[FeedBlock]) -> None:
        """Apply a batch of the feed (in position order) to the generation's tables."""

    @abstractmethod
    def mark_damaged(
        self, conn: Connection, generation: int, run_id: UUID, position: int, reason: str
    ) -> None:
        """Show in the generation's tables that ``run_id`` is skipped from a damaged event
        (at global ``position``) on (``dead_letter``); called after ``apply`` of the batch
        that met it, in the same transaction."""

    def generation_of(self, table_name: str) -> int | None:
        """The generation ``table_name`` belongs to if it is one of this projection's
        tables (exactly ``<name>_g<N>`` for one of ``tables``' names), else None."""
        bases = {schema.base_name(t.name) for t in self.tables(0)}
        return schema.generation_of(table_name, bases)

    def bulk_tables(self, generation: int) -> list[Table]:
        """The tables ``apply`` only ever bulk-loads (no upsert, no read, during a rebuild):
        where the database allows (``primary_key_after_load``), a rebuild creates them
        without their primary key and ``create_indexes`` adds it after the load."""
        return []

    def create(self, conn: Connection, generation: int, *, indexes: bool = True) -> None:
        """Create the generation's tables; secondary indexes now or (bulk load) later, and
        then also the primary keys of ``bulk_tables`` where the database allows."""
        later = set()
        if not indexes and self.store.primary_key_after_load:
            later = {t.name for t in self.bulk_tables(generation)}
        for table in self.tables(generation):
            made = _without_key(table) if table.name in later else table
            self.store.create_table(conn, made, indexes=False)  # partitioned where the store is
        if indexes:
            self.create_indexes(conn, generation)

    def create_indexes(self, conn: Connection, generation: int) -> None:
        self.store.prepare_index_build(conn)
        if self.store.primary_key_after_load:
            for table in self.bulk_tables(generation):
                if not inspect(conn).get_pk_constraint(table.name)["constrained_columns"]:
                    _add_primary_key(conn, table)
        for table in self.tables(generation):
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))
            self.store.analyze_table(conn, table.name)

    def drop_tables(self, conn: Connection, names: list[str]) -> None:
        """Drop an old generation (the backend drops without zeroing freed pages)."""
        if names:
            self.store.drop_tables(conn, names)

    def insert(self, table: Table) -> Any:
        """The database's INSERT, with ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        return self.store.upsert_statement(table)


def _add_primary_key(conn: Connection, table: Table) -> None:
    """``ALTER TABLE ... ADD CONSTRAINT <name> PRIMARY KEY (...)`` of ``table``'s key, as
    text: SQLAlchemy's ``AddConstraint`` would mark the cached ``Table``'s key as created
    apart, and a later ``CreateTable`` of it would leave the key out."""
    q = conn.dialect.identifier_preparer.quote
    pk = table.primary_key
    columns = ", ".join(q(c.name) for c in pk.columns)
    conn.exec_driver_sql(
        f"ALTER TABLE {q(table.name)} ADD CONSTRAINT {q(str(pk.name))} PRIMARY KEY ({columns})"
    )


def _without_key(table: Table) -> Table:
    """``table``'s columns (names, types, NOT NULL) without its primary key or indexes (its
    ``info`` kept: a store partitioned by run partitions it all the same)."""
    return Table(
        table.name,
        MetaData(),
        *(Column(c.name, c.type, nullable=c.nullable) for c in table.columns),
        info=dict(table.info),
    )


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
    return Checkpoint(row[0], int(row[1]), int(row[2]), int(row[3]), utc(row[4]))


def current_generation(conn: Connection, name: str) -> int | None:
    """The generation readers of projection ``name`` see, or None if it was never built."""
    if not inspect(conn).has_table(schema.checkpoints.name):
        return None
    cp = read_checkpoint(conn, name)
    return cp.generation if cp else None

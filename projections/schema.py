"""The read models' tables, on their own MetaData (the store's ``cs_`` tables know nothing
of them; a read model can be dropped and rebuilt from the log at any time).

Fixed tables (``metadata``):
- ``pj_checkpoint``: one row per projection: the generation readers see, the layout version
  it was built with, and the global position it reflects (advanced in the same transaction
  as the rows it covers).
- ``pj_lock``: the SQLite runner lock (one row per running projection runner; PostgreSQL
  uses session advisory locks instead).
- ``pj_setting``: read-model options (name, value), e.g. whether the embedding-id lookup
  index is kept (``lookup_index``).
- ``pj_dead_letter``: the runs a projection skips because one of their events does not
  decode (``dead_letter``): per projection and generation, the run, the seq and global
  position of the first such event, and why. Written in the transaction of the batch that
  met the event; a rebuild starts a new generation with none.

Generation tables: every build of a projection writes its own set of tables, named
``<base>_g<N>``, with its own MetaData (``ec_tables(N)``, ``cr_tables(N)``). The public
names (``embeddingcluster``, ``clustersize``, ``clusteringresult``) are views over the
current generation, so a rebuild fills a new generation while readers keep the old one, and
swaps the views in one transaction.

UUIDs that readers see use SQLAlchemy's ``Uuid`` (CHAR(32) lowercase hex on SQLite, native
``uuid`` on PostgreSQL), as the legacy SQLModel schema stores them; embedding ids are kept
as 16 bytes (``UUIDType``) and shown as ``Uuid`` text by the views.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache
from typing import NamedTuple

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
)

from clusterstore.eventstore.schema import CLUSTERED, KEY_INTEGER, RUN_COLUMN, UUIDType

metadata = MetaData()

checkpoints = Table(
    "pj_checkpoint",
    metadata,
    Column("name", Text, primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

locks = Table(
    "pj_lock",
    metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

settings = Table(  # read-model options, e.g. the embedding-id lookup index
    "pj_setting",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

dead_letters = Table(  # runs a projection skips from a damaged event on (``dead_letter``)
    "pj_dead_letter",
    metadata,
    Column("name", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("run_id", Uuid, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("name", "generation", "run_id", name="pj_dead_letter_pk"),
)

_Key = KEY_INTEGER


class ECTables(NamedTuple):
    """One generation of the ``embeddingcluster`` projection."""

    runs: Table  # one row per run: its key, ids, id prefixes and whether it is completed
    assignments: Table  # one row per assignment, keyed (run_key, seq); WITHOUT ROWID
    clusters: Table  # one row per (run, cluster): size, centroid, legacy cluster id


class CRTables(NamedTuple):
    """One generation of the ``clusteringresult`` projection."""

    results: Table


@lru_cache(maxsize=16)
def ec_tables(generation: int) -> ECTables:
    md = MetaData()
    g = f"_g{generation}"
    runs = Table(
        f"pj_ec_run{g}",
        md,
        Column("run_key", Integer, primary_key=True, autoincrement=False),
        Column("run_id", Uuid, nullable=False, unique=True),
        Column("result_id", Uuid, nullable=False),
        Column("id_prefix", String(16), nullable=False),
        Column("cluster_prefix", String(16), nullable=False),
        Column("completed", Boolean, nullable=False),
        Column("legacy_clusters", Boolean, nullable=False),  # cluster ids come from the import
        Index(f"pj_ec_run{g}_result", "result_id"),
    )
    assignments = Table(  # columns in this order: no alignment padding on PostgreSQL
        f"pj_ec_assignment{g}",
        md,
        Column("seq", _Key, nullable=False),
        Column("cluster", _Key, nullable=False),
        Column("run_key", Integer, nullable=False),
        Column("distance", REAL, nullable=True),
        Column("embedding_id", UUIDType, nullable=False),
        # the row's stored id: an imported assignment's legacy row id, or, with the lookup
        # option on (``lookup_index``), every row's id; NULL: derived from (run, seq)
        Column("legacy_id", UUIDType, nullable=True),
        PrimaryKeyConstraint("run_key", "seq", name=f"pj_ec_assignment{g}_pk"),
        info={RUN_COLUMN: "run_key"},  # partitioned where the store is (by run)
        **CLUSTERED,
    )
    clusters = Table(
        f"pj_ec_cluster{g}",
        md,
        Column("run_key", Integer, nullable=False),
        Column("cluster", _Key, nullable=False),
        Column("size", _Key, nullable=False),
        Column("centroid", LargeBinary, nullable=True),
        Column("legacy_cluster_id", Uuid, nullable=True),  # an imported run's cluster UUID
        PrimaryKeyConstraint("run_key", "cluster", name=f"pj_ec_cluster{g}_pk"),
        **CLUSTERED,
    )
    return ECTables(runs, assignments, clusters)


@lru_cache(maxsize=16)
def cr_tables(generation: int) -> CRTables:
    md = MetaData()
    g = f"_g{generation}"
    results = Table(
        f"pj_cr{g}",
        md,
        Column("run_id", Uuid, primary_key=True),
        Column("id", Uuid, nullable=False),
        Column("model", Text, nullable=True),
        Column("algorithm", Text, nullable=True),
        Column("params", JSON, nullable=True),
        Column("k", Integer, nullable=True),
        Column("dim", Integer, nullable=True),
        Column("seed", BigInteger, nullable=True),
        Column("n_embeddings", BigInteger, nullable=True),
        Column("n_assignments", BigInteger, nullable=False),
        Column("status", String(16), nullable=False),
        Column("error", Text, nullable=True),
        Column("started_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("duration", Float, nullable=True),
        Column("first_position", BigInteger, nullable=False),
        Column("n_noise", BigInteger, nullable=True),  # from RunCompleted (label -1)
        Index(f"pj_cr{g}_id", "id"),
    )
    return CRTables(results)


def generation_of(table_name: str, bases: Collection[str]) -> int | None:
    """The generation of a physical table named exactly ``<base>_g<N>`` for one of
    ``bases`` (a projection's table names without the suffix), else None. Exact: a table
    whose name only starts like a base (``pj_crowd_g1`` for ``pj_cr``) is someone else's."""
    m = _GENERATION_TABLE.fullmatch(table_name)
    return int(m.group(2)) if m is not None and m.group(1) in bases else None


def base_name(table_name: str) -> str:
    """A generation table's name without its ``_g<N>`` suffix."""
    m = _GENERATION_TABLE.fullmatch(table_name)
    if m is None:
        raise ValueError(f"{table_name!r} is not a generation table name")
    return m.group(1)


_GENERATION_TABLE = re.compile(r"(.+)_g(\d+)")

"""The ``embeddingcluster`` read model (and ``clustersize``): which cluster each embedding
is in, per completed run.

Storage: ``pj_ec_assignment_g<N>`` holds every projected assignment of every run, keyed
``(run_key, seq)`` (WITHOUT ROWID on SQLite) with the embedding id as 16 bytes / native
uuid, the cluster index and the distance. Rows arrive in key order, so loading is an append
per run, not a random-key index insert. ``pj_ec_run_g<N>`` has one row per run (its small
integer key, ids, id prefixes, and whether it is completed); ``pj_ec_cluster_g<N>`` the
size of every cluster (counted from the projected assignments) and its centroid.

``embeddingcluster`` is a **view** over them with the legacy SQLModel columns ``id``,
``embedding_id``, ``clustering_result_id``, ``cluster_id`` (CHAR(32) lowercase hex on
SQLite, ``uuid`` on PostgreSQL, as SQLAlchemy's ``Uuid`` stores them) plus ``run_id``,
``seq``, ``cluster`` and ``distance``. It shows **completed runs only**: a running or failed
run's assignments are kept in the table (a resumed run continues them) but filtered out by
the view until its ``RunCompleted`` is projected, in the same transaction as the checkpoint,
so a reader never sees part of a run. ``id`` and ``cluster_id`` are computed from per-run
prefixes (``ids``), identical after any rebuild. ``clustering_result_id`` is the run id
(or, for an imported run, its legacy id). ``clustersize`` shows, per completed run, each
cluster's size and centroid (float32 little-endian bytes).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar
from uuid import UUID

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Table, Uuid, bindparam, func, select, text, update

from eventstore.codec import (
    ASSIGNMENT_WIDTH,
    decode,
    encode,
    is_canonical_assignment,
    pack_assignments,
    unpack_assignments,
)
from eventstore.errors import EventDecodeError
from eventstore.events import (
    AssignmentRecorded,
    CentroidsComputed,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from eventstore.feed import FeedBlock
from eventstore.recorder import StoredEvent
from eventstore.store import EventStore

from . import ids
from ._load import Rows, insert_rows
from .base import Projection, current_generation
from .schema import ECTables, ec_tables


class EmbeddingClusterProjection(Projection):
    name: ClassVar[str] = "embeddingcluster"
    version: ClassVar[int] = 1
    reads_assignments: ClassVar[bool] = True
    views: ClassVar[tuple[str, ...]] = ("embeddingcluster", "clustersize")
    table_prefix: ClassVar[str] = "pj_ec_"

    def tables(self, generation: int) -> list[Table]:
        return list(ec_tables(generation))

    # ------------------------------------------------------------------ views

    def publish(self, conn: Connection, generation: int) -> None:
        t = ec_tables(generation)
        pg = self.dialect == "postgresql"
        for view, body in (("embeddingcluster", _EC_VIEW), ("clustersize", _SIZE_VIEW)):
            sql = body.format(
                a=t.assignments.name,
                r=t.runs.name,
                c=t.clusters.name,
                completed="r.completed" if pg else "r.completed = 1",
                id=_id_sql("r.id_prefix", "a.seq", pg),
                cluster_id=_id_sql("r.cluster_prefix", "a.cluster", pg),
                size_cluster_id=_id_sql("r.cluster_prefix", "c.cluster", pg),
                embedding_id="a.embedding_id" if pg else "lower(hex(a.embedding_id))",
            )
            if pg:
                conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {view} AS {sql}")
            else:
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
                conn.exec_driver_sql(f"CREATE VIEW {view} AS {sql}")

    # ------------------------------------------------------------------ apply

    def apply(self, conn: Connection, generation: int, blocks: list[FeedBlock]) -> None:
        t = ec_tables(generation)
        keys = self._run_keys(conn, t, blocks)
        parts: list[Rows] = []
        for block in blocks:
            key = keys[block.run_id]
            if block.n_assignments:
                parts.append(_block_rows(key, block))
            extra = [ev for ev in block.others if ev.type == AssignmentRecorded.TYPE]
            if extra:
                parts.append(_decoded_rows(key, extra))
        if parts:
            rows = Rows.concat(parts)
            insert_rows(conn, self.dialect, t.assignments, rows)
            self._add_sizes(conn, t, rows)
        for block in blocks:
            for ev in block.others:
                if ev.type != AssignmentRecorded.TYPE:
                    self._apply_event(conn, t, keys[block.run_id], ev)

    def _run_keys(self, conn: Connection, t: ECTables, blocks: list[FeedBlock]) -> dict[UUID, int]:
        """Each run's key; runs seen for the first time get the next keys, in feed order."""
        run_ids = list(dict.fromkeys(b.run_id for b in blocks))
        r = t.runs
        keys: dict[UUID, int] = dict(
            conn.execute(select(r.c.run_id, r.c.run_key).where(r.c.run_id.in_(run_ids))).all()
        )
        new = [run for run in run_ids if run not in keys]
        if new:
            started = {
                ev.run_id: _decode(ev)
                for b in blocks
                for ev in b.others
                if ev.type == RunStarted.TYPE
            }
            nxt = int(conn.execute(select(func.max(r.c.run_key))).scalar() or 0) + 1
            rows = []
            for i, run in enumerate(new):
                keys[run] = nxt + i
                legacy = getattr(started.get(run), "legacy_id", None)
                rows.append(
                    {
                        "run_key": nxt + i,
                        "run_id": run,
                        "result_id": legacy or run,
                        "id_prefix": ids.prefix(ids.ASSIGNMENT_DOMAIN, run),
                        "cluster_prefix": ids.prefix(ids.CLUSTER_DOMAIN, run),
                        "completed": False,
                    }
                )
            conn.execute(r.insert(), rows)
        return keys

    def _add_sizes(self, conn: Connection, t: ECTables, rows: Rows) -> None:
        combined = (rows.run_key.astype(np.int64) << 32) | rows.cluster.astype(np.int64)
        values, counts = np.unique(combined, return_counts=True)
        c = t.clusters
        stmt = self.insert(c)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_key", "cluster"], set_={"size": c.c.size + stmt.excluded.size}
        )
        conn.execute(
            stmt,
            [
                {
                    "run_key": int(v >> 32),
                    "cluster": int(v & 0xFFFFFFFF),
                    "size": int(n),
                    "centroid": None,
                }
                for v, n in zip(values.tolist(), counts.tolist(), strict=True)
            ],
        )

    def _apply_event(self, conn: Connection, t: ECTables, key: int, ev: StoredEvent) -> None:
        event = _decode(ev)
        r, c = t.runs, t.clusters
        match event:
            case CentroidsComputed():
                width = event.dim * 4
                stmt = self.insert(c)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_key", "cluster"],
                    set_={"centroid": stmt.excluded.centroid},
                )
                conn.execute(
                    stmt,
                    [
                        {
                            "run_key": key,
                            "cluster": i,
                            "size": 0,
                            "centroid": event.centroids[i * width : (i + 1) * width],
                        }
                        for i in range(event.k)
                    ],
                )
            case RunCompleted():
                conn.execute(update(r).where(r.c.run_key == key).values(completed=True))
                if event.cluster_sizes:
                    missing = self.insert(c).on_conflict_do_nothing(
                        index_elements=["run_key", "cluster"]
                    )
                    conn.execute(
                        missing,
                        [
                            {"run_key": key, "cluster": i, "size": 0, "centroid": None}
                            for i in range(len(event.cluster_sizes))
                        ],
                    )
            case RunFailed() | RunResumed():
                conn.execute(update(r).where(r.c.run_key == key).values(completed=False))
            case _:
                pass


# ---------------------------------------------------------------------------- rows


def _block_rows(key: int, block: FeedBlock) -> Rows:
    assert block.assignments is not None
    try:
        rec = unpack_assignments(block.assignments)
    except EventDecodeError:  # a 29-byte payload in another msgpack layout: re-encode it
        rec = unpack_assignments(_canonical(block))
    return Rows.of(key, block.assignment_seqs(), rec)


def _canonical(block: FeedBlock) -> bytes:
    data = block.assignments or b""
    out = []
    for i, seq in enumerate(block.assignment_seqs().tolist()):
        payload = data[i * ASSIGNMENT_WIDTH : (i + 1) * ASSIGNMENT_WIDTH]
        if not is_canonical_assignment(payload):
            payload = encode(
                decode(
                    AssignmentRecorded.TYPE,
                    AssignmentRecorded.VERSION,
                    payload,
                    run_id=block.run_id,
                    seq=seq,
                )
            ).payload
        out.append(payload)
    return b"".join(out)


def _decoded_rows(key: int, events: list[StoredEvent]) -> Rows:
    """Assignments stored in another layout (an older version): decoded one by one."""
    decoded = [_decode(ev) for ev in events]
    packed = pack_assignments(
        np.array([a.embedding_id for a in decoded], dtype=object),
        np.array([a.cluster for a in decoded], dtype=np.int64),
        np.array([a.distance for a in decoded], dtype=np.float32),
    )
    seqs = np.array([ev.seq for ev in events], dtype=np.int64)
    return Rows.of(key, seqs, unpack_assignments(packed.data))


def _decode(ev: StoredEvent) -> Any:
    return decode(ev.type, ev.version, ev.payload, run_id=ev.run_id, seq=ev.seq)


# ---------------------------------------------------------------------------- views SQL


def _id_sql(prefix: str, number: str, pg: bool) -> str:
    """A deterministic id (see ``ids``): the run's prefix and ``number | 1 << 63`` in hex."""
    if pg:
        return f"({prefix} || to_hex({number} | (1::bigint << 63)))::uuid"
    return f"{prefix} || printf('%016x', {number} | (1 << 63))"


_EC_VIEW = """SELECT {id} AS id, {embedding_id} AS embedding_id,
 r.result_id AS clustering_result_id, {cluster_id} AS cluster_id, r.run_id AS run_id,
 a.seq AS seq, a.cluster AS cluster, a.distance AS distance
FROM {a} AS a JOIN {r} AS r ON r.run_key = a.run_key
WHERE {completed}"""

_SIZE_VIEW = """SELECT r.result_id AS clustering_result_id, r.run_id AS run_id,
 c.cluster AS cluster, {size_cluster_id} AS cluster_id, c.size AS size, c.centroid AS centroid
FROM {c} AS c JOIN {r} AS r ON r.run_key = c.run_key
WHERE {completed}"""


# ---------------------------------------------------------------------------- digest


def read_model_digest(store: EventStore, run_id: UUID) -> tuple[int, str] | None:
    """(row count, sha256 hex) of a run's rows in ``embeddingcluster``: the canonical
    29-byte assignment payloads rebuilt from the view's rows in seq order, the same digest
    as ``RunCompleted.digest``. None if the run is not in the read model (never projected,
    or not completed, so the view does not show it)."""
    with store.recorder.transaction() as conn:
        generation = current_generation(conn, EmbeddingClusterProjection.name)
        if generation is None:
            return None
        r = ec_tables(generation).runs
        completed = conn.execute(select(r.c.completed).where(r.c.run_id == run_id)).scalar()
        if not completed:
            return None
        query = text(
            "SELECT embedding_id, cluster, distance FROM embeddingcluster "
            "WHERE run_id = :run ORDER BY seq"
        ).bindparams(bindparam("run", type_=Uuid()))
        digest = hashlib.sha256()
        count = 0
        result = conn.execution_options(yield_per=50_000).execute(query, {"run": run_id})
        for part in result.partitions():
            data = _payloads(part)
            digest.update(data)
            count += len(part)
        return count, digest.hexdigest()


def _payloads(rows: Any) -> bytes:
    ids_col = [row[0] for row in rows]
    if ids_col and isinstance(ids_col[0], str):
        raw = bytes.fromhex("".join(ids_col))
    else:
        raw = b"".join(u.bytes for u in ids_col)
    clusters: npt.NDArray[np.int64] = np.array([row[1] for row in rows], dtype=np.int64)
    distances = np.array(
        [np.nan if row[2] is None else row[2] for row in rows], dtype=np.float64
    ).astype(np.float32)
    return pack_assignments(np.frombuffer(raw, dtype="V16"), clusters, distances).data

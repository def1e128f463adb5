"""The ``embeddingcluster`` read model (and ``clustersize``): which cluster each embedding
is in, per completed run.

Storage: ``pj_ec_assignment_g<N>`` holds every projected assignment of every run, keyed
``(run_key, seq)`` (WITHOUT ROWID on SQLite) with the embedding id as 16 bytes / native
uuid, the cluster index, the distance, and a stored row id (an imported assignment's legacy row
id; every row's id while the lookup option is on, ``lookup_index``). Rows
arrive in key order, so loading appends within a run instead of inserting at random keys.
``pj_ec_run_g<N>`` has one row per run (its small integer key, ids, id prefixes, whether it
is completed); ``pj_ec_cluster_g<N>`` the size of every cluster (counted from the projected
assignments), its centroid and, for an imported run, its legacy cluster UUID.

``embeddingcluster`` is a **view** with the legacy SQLModel columns ``id``,
``embedding_id``, ``clustering_result_id``, ``cluster_id`` (CHAR(32) lowercase hex on
SQLite, ``uuid`` on PostgreSQL, as SQLAlchemy's ``Uuid`` stores them) plus ``run_id``,
``seq``, ``cluster`` and ``distance``. It shows **completed runs only**: a running or failed
run's assignments stay in the table (a resumed run continues them) but the view hides them
until the run's ``RunCompleted`` is projected, in the same transaction as the checkpoint,
so a reader never sees part of a run.

Ids are identical after any rebuild: ``id`` is a function of (run, seq) and ``cluster_id``
of (run, cluster index) (``ids``), where a run made by ``assign`` counts as its parent run
(its rows get the parent's cluster UUIDs, so SQL can join the two on ``cluster_id``); an
imported run keeps its legacy row ids and cluster
UUIDs instead (from ``AssignmentRecorded.legacy_id`` and ``RunStarted.legacy_cluster_ids``),
so the SQL users ran against their old tables returns the same rows. With the lookup
option on, every row stores its id and the view shows that column (indexed), so
``WHERE id = ?`` is an index lookup; the values are the same.
``clustering_result_id`` is the run id (an imported run's is its legacy result id).
Noise (an assignment labelled -1, e.g. an HDBSCAN outlier) is a row like any other, with
``cluster`` -1 and a NULL ``cluster_id``; it is in no ``clustersize`` row.
``clustersize`` shows, per completed run, each cluster's size and centroid (float32
little-endian bytes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar
from uuid import UUID

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    Connection,
    Table,
    func,
    select,
    update,
)

from clusterstore.eventstore import StoredEvent
from clusterstore.eventstore.codec import (
    ASSIGNMENT_WIDTH,
    PackedEvents,
    pack_assignments,
    unpack_assignments,
)
from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.events import (
    AssignmentRecorded,
    CentroidsComputed,
    RunCompleted,
    RunStarted,
)
from clusterstore.eventstore.feed import FeedBlock
from clusterstore.eventstore.lifecycle import transition
from clusterstore.eventstore.rows import AssignmentRows as Rows
from clusterstore.eventstore.runs import run_digest
from clusterstore.eventstore.store import EventStore, decode_stored

from . import ids
from .base import Projection, current_generation
from .lookup_index import (
    IDS_SETTING,
    create_lookup_index,
    lookup_index_enabled,
    stored_ids_generation,
    view_id,
    write_setting,
)
from .schema import ECTables, ec_tables


class EmbeddingClusterProjection(Projection):
    name: ClassVar[str] = "embeddingcluster"
    version: ClassVar[int] = 2  # 2: noise (-1) has a NULL cluster_id and no clustersize row
    reads_assignments: ClassVar[bool] = True
    views: ClassVar[tuple[str, ...]] = ("embeddingcluster", "clustersize")

    def tables(self, generation: int) -> list[Table]:
        return list(ec_tables(generation))

    def bulk_tables(self, generation: int) -> list[Table]:
        return [ec_tables(generation).assignments]

    def create_indexes(self, conn: Connection, generation: int) -> None:
        """The tables' indexes, and the lookup indexes by embedding id and by id when the
        option is switched on (``lookup.set_lookup_index``; it costs replay speed, so it is
        a choice). Called once a generation is loaded (or created empty): with the option
        on, ``apply`` stored every row's id, so the generation is marked as storing them."""
        super().create_indexes(conn, generation)
        if lookup_index_enabled(conn):
            write_setting(conn, IDS_SETTING, str(generation))
            create_lookup_index(self.store, conn, generation)

    def publish(self, conn: Connection, generation: int) -> None:
        """The views over ``generation``; ``id`` is the stored (indexed) column when the
        generation's rows all store it, else derived from (run, seq) or a legacy row id."""
        t = ec_tables(generation)
        db = self.store
        stored = stored_ids_generation(conn) == generation
        for view, body in (("embeddingcluster", _EC_VIEW), ("clustersize", _SIZE_VIEW)):
            sql = body.format(
                a=t.assignments.name,
                r=t.runs.name,
                c=t.clusters.name,
                id=view_id(db) if stored else _derived_id(db),
                cluster_id=db.sql_derived_uuid("r.cluster_prefix", "a.cluster"),
                size_cluster_id=db.sql_derived_uuid("r.cluster_prefix", "c.cluster"),
                embedding_id=db.sql_uuid_text("a.embedding_id"),
            )
            db.replace_view(conn, view, sql)

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
            if lookup_index_enabled(conn):  # the lookup by id reads the stored id
                rows = _with_ids(rows, {key: run for run, key in keys.items()})
            fresh = generation == self.fresh_generation
            self.store.insert_assignment_rows(conn, t.assignments, rows, fresh=fresh)
            self._add_sizes(conn, t, rows)
        for block in blocks:
            for ev in block.others:
                if ev.type != AssignmentRecorded.TYPE:
                    self._apply_event(conn, t, keys[block.run_id], ev)

    def mark_damaged(
        self, conn: Connection, generation: int, run_id: UUID, position: int, reason: str
    ) -> None:
        """The views hide the run (its rows so far stay in the table, as for a failed run)."""
        r = ec_tables(generation).runs
        conn.execute(update(r).where(r.c.run_id == run_id).values(completed=False))

    def _run_keys(self, conn: Connection, t: ECTables, blocks: list[FeedBlock]) -> dict[UUID, int]:
        """Each run's key; runs seen for the first time get the next keys, in feed order."""
        run_ids = list(dict.fromkeys(b.run_id for b in blocks))
        r = t.runs
        found = conn.execute(select(r.c.run_id, r.c.run_key).where(r.c.run_id.in_(run_ids)))
        keys: dict[UUID, int] = {run: int(key) for run, key in found}
        new = [run for run in run_ids if run not in keys]
        if not new:
            return keys
        started: dict[UUID, RunStarted] = {}
        for b in blocks:
            for ev in b.others:
                if ev.type == RunStarted.TYPE and b.run_id in new and ev.run_id not in started:
                    event = decode_stored(ev)
                    if isinstance(event, RunStarted):
                        started[ev.run_id] = event
        nxt = int(conn.execute(select(func.max(r.c.run_key))).scalar() or 0) + 1
        runs: list[dict[str, Any]] = []
        clusters: list[dict[str, Any]] = []
        for key, run in enumerate(new, start=nxt):
            keys[run] = key
            first = started.get(run)
            legacy_clusters = list(first.legacy_cluster_ids or []) if first else []
            runs.append(
                {
                    "run_key": key,
                    "run_id": run,
                    "result_id": (first.legacy_id if first else None) or run,
                    "id_prefix": ids.prefix(ids.ASSIGNMENT_DOMAIN, run),
                    "cluster_prefix": self._cluster_prefix(conn, t, run, first, runs),
                    "completed": False,
                    "legacy_clusters": bool(legacy_clusters),
                }
            )
            clusters.extend(
                {
                    "run_key": key,
                    "cluster": i,
                    "size": 0,
                    "centroid": None,
                    "legacy_cluster_id": legacy,
                }
                for i, legacy in enumerate(legacy_clusters)
            )
        conn.execute(r.insert(), runs)
        if clusters:
            conn.execute(t.clusters.insert(), clusters)
        return keys

    def _cluster_prefix(
        self,
        conn: Connection,
        t: ECTables,
        run: UUID,
        started: RunStarted | None,
        pending: list[dict[str, Any]],
    ) -> str:
        """The run's cluster-id prefix; a run assigned to another run's clusters
        (``parent_run_id``) shares its parent's, so the same cluster has the same
        ``cluster_id`` in both. The parent precedes the child in the feed, so its row exists
        (or is among ``pending``) in any rebuild; without it, the parent's own prefix."""
        parent = started.parent_run_id if started is not None else None
        if parent is None:
            return ids.prefix(ids.CLUSTER_DOMAIN, run)
        for row in pending:
            if row["run_id"] == parent:
                return str(row["cluster_prefix"])
        r = t.runs
        found = conn.execute(select(r.c.cluster_prefix).where(r.c.run_id == parent)).scalar()
        return str(found) if found is not None else ids.prefix(ids.CLUSTER_DOMAIN, parent)

    def _add_sizes(self, conn: Connection, t: ECTables, rows: Rows) -> None:
        real = rows.cluster >= 0  # noise (-1) is in no cluster
        if not real.all():
            rows = rows.take(real)
            if not len(rows):
                return
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
        event = decode_stored(ev)
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
            case RunStarted():
                pass  # the run's row was made by _run_keys
            case _:
                change = transition(event)
                if change is None:
                    return
                # the views show a run only while its lifecycle says completed
                completed = change.status == "completed"
                conn.execute(update(r).where(r.c.run_key == key).values(completed=completed))
                if isinstance(event, RunCompleted) and event.cluster_sizes:
                    # every cluster gets a row, empty ones too
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


# ---------------------------------------------------------------------------- rows


def _block_rows(key: int, block: FeedBlock) -> Rows:
    assert block.assignments is not None
    try:
        rec = unpack_assignments(block.assignments, legacy=block.width != ASSIGNMENT_WIDTH)
    except EventDecodeError:  # a fixed-width payload in another msgpack layout: decode each
        seqs = block.assignment_seqs().tolist()
        w = block.width
        return _decoded_rows(
            key,
            [
                StoredEvent(
                    block.run_id,
                    seq,
                    AssignmentRecorded.TYPE,
                    AssignmentRecorded.VERSION,
                    block.assignments[i * w : (i + 1) * w],
                )
                for i, seq in enumerate(seqs)
            ],
        )
    return Rows.of(key, block.assignment_seqs(), rec)


def _decoded_rows(key: int, events: list[StoredEvent]) -> Rows:
    """Assignments in a layout numpy does not read (e.g. an older version): one by one."""
    decoded = [_assignment(ev) for ev in events]
    n = len(decoded)
    return Rows(
        np.full(n, key, dtype=np.int64),
        np.array([ev.seq for ev in events], dtype=np.int64),
        np.frombuffer(b"".join(a.embedding_id.bytes for a in decoded), dtype="V16"),
        np.array([a.cluster for a in decoded], dtype=np.int64),
        np.array([a.distance for a in decoded], dtype=np.float32),
        np.frombuffer(
            b"".join(a.legacy_id.bytes if a.legacy_id else bytes(16) for a in decoded),
            dtype="V16",
        ),
        np.array([a.legacy_id is not None for a in decoded], dtype=np.bool_),
    )


def _derived_ids(seq: npt.NDArray[np.int64], prefix: bytes) -> npt.NDArray[np.void]:
    """``ids.assignment_id`` of one run's ``seq``s as 16-byte values."""
    derived = np.zeros(len(seq), dtype=[("prefix", "V8"), ("number", ">u8")])
    derived["prefix"] = np.frombuffer(prefix, dtype="V8")[0]
    derived["number"] = seq.astype(np.uint64) | np.uint64(1 << 63)
    return derived.view("V16").reshape(-1)


def _with_ids(rows: Rows, runs: dict[int, UUID]) -> Rows:
    """``rows`` with every row's id stored in ``legacy_id`` (an imported row keeps its
    legacy row id; the others get the id derived from (run, seq))."""
    missing = ~rows.has_legacy
    if not missing.any():
        return rows
    stored = rows.legacy_id.copy()
    for key in np.unique(rows.run_key[missing]).tolist():
        at = missing & (rows.run_key == key)
        prefix = bytes.fromhex(ids.prefix(ids.ASSIGNMENT_DOMAIN, runs[key]))
        stored[at] = _derived_ids(rows.seq[at], prefix)
    return replace(rows, legacy_id=stored, has_legacy=np.ones(len(rows), dtype=np.bool_))


def _assignment(ev: StoredEvent) -> AssignmentRecorded:
    event = decode_stored(ev)
    if not isinstance(event, AssignmentRecorded):  # callers pass assignment events only
        raise TypeError(f"seq {ev.seq} of run {ev.run_id} is not an AssignmentRecorded")
    return event


# ---------------------------------------------------------------------------- views SQL


def _derived_id(db: EventStore) -> str:
    """A row's ``id`` when not every row stores it: its legacy row id, or (run, seq)'s."""
    legacy = db.sql_uuid_text("a.legacy_id", nullable=True)
    return f"COALESCE({legacy}, {db.sql_derived_uuid('r.id_prefix', 'a.seq')})"


# {id}: the stored id (``lookup_index``), or the legacy row id else the deterministic id;
# {cluster_id}: deterministic ids (``ids``), the run's prefix and the number in hex; a
# boolean column is tested as itself (SQLite stores it as 0/1).
_EC_VIEW = """SELECT {id} AS id, {embedding_id} AS embedding_id,
 r.result_id AS clustering_result_id,
 CASE WHEN a.cluster < 0 THEN NULL
 WHEN r.legacy_clusters THEN COALESCE((SELECT c.legacy_cluster_id FROM {c} AS c
   WHERE c.run_key = a.run_key AND c.cluster = a.cluster), {cluster_id})
 ELSE {cluster_id} END AS cluster_id,
 r.run_id AS run_id, a.seq AS seq, a.cluster AS cluster, a.distance AS distance
FROM {a} AS a JOIN {r} AS r ON r.run_key = a.run_key
WHERE r.completed"""

_SIZE_VIEW = """SELECT r.result_id AS clustering_result_id, r.run_id AS run_id,
 c.cluster AS cluster, COALESCE(c.legacy_cluster_id, {size_cluster_id}) AS cluster_id,
 c.size AS size, c.centroid AS centroid
FROM {c} AS c JOIN {r} AS r ON r.run_key = c.run_key
WHERE r.completed"""


# ---------------------------------------------------------------------------- digest


def read_model_digest(store: EventStore, run_id: UUID) -> tuple[int, str] | None:
    """(row count, digest hex) of a run's rows in ``embeddingcluster``: the assignment
    payloads rebuilt from the view's rows in seq order (the canonical 29-byte layout, or the
    47-byte one with the legacy row id where ``id`` is one), the same digest (of the version
    the run's RunStarted declares) as ``RunCompleted.digest``. None if the run is not in the
    read model (never projected, or not completed, so the view does not show it)."""
    blocks = _view_blocks(store, run_id)
    if blocks is None:
        return None
    digest = run_digest(store, run_id)
    count = 0
    for seqs, parts in blocks:
        for packed in parts:
            digest.update(packed.data, packed.count)
        count += len(seqs)
    return count, digest.hexdigest()


def first_read_model_difference(store: EventStore, run_id: UUID) -> int | None:
    """The first seq at which the log's assignments and the run's rows in the read model
    differ (changed, missing or extra on either side), or None when they agree or the run is
    not in the read model. The read model was projected from the log when the run completed,
    so after a change made around the store it pinpoints the changed row, which the digest
    alone cannot."""
    chunks = _view_chunks(store, run_id)
    if chunks is None:
        return None
    model = ((seq, p) for seqs, payloads in chunks for seq, p in zip(seqs, payloads, strict=True))
    log = (
        (ev.seq, ev.payload)
        for page in store.read_stream_pages(run_id)
        for ev in page
        if ev.type == AssignmentRecorded.TYPE
    )
    for pair in itertools.zip_longest(log, model):
        a, b = pair
        if a != b:
            return min(x[0] for x in pair if x is not None)
    return None


def _view_chunks(store: EventStore, run_id: UUID) -> Iterator[tuple[list[int], list[bytes]]] | None:
    """The run's rows in the ``embeddingcluster`` view as (seqs, payloads) chunks in seq
    order, or None if the view does not show the run."""
    blocks = _view_blocks(store, run_id)
    if blocks is None:
        return None
    return (
        (seqs.tolist(), [p for packed in parts for p in _split(packed)]) for seqs, parts in blocks
    )


def _split(packed: PackedEvents) -> list[bytes]:
    return [packed.payload(i) for i in range(packed.count)]


Block = tuple[npt.NDArray[np.int64], list[PackedEvents]]


def _view_blocks(store: EventStore, run_id: UUID) -> Iterator[Block] | None:
    """What the view shows of the run, read in pages of ``CHUNK`` rows straight from the
    assignment table (the view is that table joined to the run row, ``id`` derived from
    (run, seq) unless a legacy row id is kept): (seqs, payload blocks) in seq order, or
    None if the view does not show the run (never projected, or not completed)."""
    with store.transaction() as conn:
        generation = current_generation(conn, EmbeddingClusterProjection.name)
        if generation is None:
            return None
        r = ec_tables(generation).runs
        row = conn.execute(select(r.c.run_key, r.c.completed).where(r.c.run_id == run_id)).first()
    if row is None or not row[1]:
        return None
    return _read_blocks(store, ec_tables(generation), int(row[0]), run_id)


CHUNK = 100_000  # rows per read of the assignment table


def _read_blocks(store: EventStore, t: ECTables, key: int, run_id: UUID) -> Iterator[Block]:
    """The run's rows in seq ranges of ``CHUNK`` seqs from its first row, each a bounded
    range of the table's key (run_key, seq): no read touches rows outside its range,
    whatever plan the database picks (on PostgreSQL a LIMIT read with stale statistics
    scanned and sorted the rest of the run once per chunk)."""
    prefix = bytes.fromhex(ids.prefix(ids.ASSIGNMENT_DOMAIN, run_id))
    a = t.assignments
    with store.transaction() as conn:
        lo, hi = conn.execute(
            select(func.min(a.c.seq), func.max(a.c.seq)).where(a.c.run_key == key)
        ).one()
    if lo is None:
        return
    after = int(lo) - 1
    while after < int(hi):
        until = after + CHUNK
        with store.transaction() as conn:
            rows = store.read_assignment_rows(conn, a, key, after=after, until=until, limit=CHUNK)
        if len(rows):
            yield _packed(rows, prefix)
        after = until


def _packed(rows: Rows, prefix: bytes) -> Block:
    """The payload of each row: the 29-byte layout, or the 47-byte one where the view's
    ``id`` is a kept legacy row id (one that differs from the id derived from (run, seq))."""
    legacy = rows.has_legacy.copy()
    if legacy.any():  # a stored id (``lookup_index``) equal to the derived one is no legacy id
        legacy &= _derived_ids(rows.seq, prefix) != rows.legacy_id
    parts = []
    cuts = [0, *(np.flatnonzero(np.diff(legacy)) + 1).tolist(), len(rows)]
    for lo, hi in itertools.pairwise(cuts):  # imported rows carry their row ids
        extra = {"legacy_ids": rows.legacy_id[lo:hi]} if legacy[lo] else {}
        cut = slice(lo, hi)
        parts.append(
            pack_assignments(rows.embedding_id[cut], rows.cluster[cut], rows.distance[cut], **extra)
        )
    return rows.seq, parts

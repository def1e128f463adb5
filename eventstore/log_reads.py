"""Bulk reads of the log for checking it (the audit): point reads by key, counts over one
run's key range, and the commits. SQLAlchemy Core over ``schema``, each inside
``Recorder.transaction`` (which converts driver errors); all cheap for a big run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

import numpy as np
from sqlalchemy import BigInteger, LargeBinary, and_, cast, column, func, select, values

from .codec import ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH, payloads_in_key_order
from .events import AssignmentRecorded
from .recorder import Recorder, StoredEvent
from .schema import UUIDType, commits, events

_KEY_CHUNK = 2_000  # keys per statement (two parameters each)
_ARRAY_CHUNK = 50_000  # keys per statement as two array parameters (``events_at_sql``)


def read_events_at(
    recorder: Recorder, keys: Sequence[tuple[UUID, int]]
) -> dict[tuple[UUID, int], StoredEvent]:
    """The stored events at the given (run_id, seq) keys (missing keys are left out): the
    keys as a ``VALUES`` table joined to the log on its primary key, one point lookup each
    (a row-value ``IN`` list is no key lookup on SQLite: it scanned the log per statement),
    or, where the backend has ``events_at_sql``, as two arrays (one parameter each: the
    client no longer compiles and binds two parameters per key)."""
    out: dict[tuple[UUID, int], StoredEvent] = {}
    if recorder.events_at_sql is not None:
        for lo in range(0, len(keys), _ARRAY_CHUNK):
            chunk = keys[lo : lo + _ARRAY_CHUNK]
            params = {"runs": [run for run, _ in chunk], "seqs": [int(seq) for _, seq in chunk]}
            with recorder.transaction() as conn:
                found = recorder.fetch_all(conn, recorder.events_at_sql, params)
            for r in found:
                out[(r[0], r[1])] = StoredEvent(r[0], r[1], r[2], r[3], bytes(r[4]))
        return out
    e = events
    for lo in range(0, len(keys), _KEY_CHUNK):
        chunk = [(run, int(seq)) for run, seq in keys[lo : lo + _KEY_CHUNK]]
        k = (
            values(column("run_id", UUIDType()), column("seq", BigInteger()), name="k")
            .data(chunk)
            .cte("k")
        )
        on = and_(e.c.run_id == k.c.run_id, e.c.seq == k.c.seq)
        query = select(e.c.run_id, e.c.seq, e.c.type, e.c.version, e.c.payload).select_from(
            k.join(e, on)
        )
        with recorder.transaction() as conn:
            rows = conn.execute(query).all()
        for r in rows:
            out[(r[0], r[1])] = StoredEvent(r[0], r[1], r[2], r[3], bytes(r[4]))
    return out


def count_events(recorder: Recorder, run_id: UUID, *, type: int) -> int:
    """The run's stored events of ``type``: a count over the run's primary-key range."""
    e = events
    with recorder.transaction() as conn:
        value = conn.execute(
            select(func.count()).where(e.c.run_id == run_id, e.c.type == type)
        ).scalar()
    return int(value or 0)


def read_committed_heads(recorder: Recorder) -> dict[UUID, int]:
    """Each run's last committed seq, from ``cs_commits`` (rows inserted into the log
    around the store are not covered by any commit)."""
    c = commits
    last = func.max(c.c.first_seq + c.c.count - 1)
    with recorder.transaction() as conn:
        rows = conn.execute(select(c.c.run_id, last).group_by(c.c.run_id)).all()
    return {r[0]: int(r[1]) for r in rows}


def read_run_commits(recorder: Recorder, run_id: UUID) -> list[tuple[int, int]]:
    """The run's append transactions as (first_seq, count), in seq order."""
    c = commits
    with recorder.transaction() as conn:
        rows = conn.execute(
            select(c.c.first_seq, c.c.count).where(c.c.run_id == run_id).order_by(c.c.first_seq)
        ).all()
    return [(int(r[0]), int(r[1])) for r in rows]


def run_last_position(recorder: Recorder, run_id: UUID) -> int | None:
    """The global position of the run's last commit, or None if it has none."""
    c = commits
    with recorder.transaction() as conn:
        last = conn.execute(select(func.max(c.c.position)).where(c.c.run_id == run_id)).scalar()
    return None if last is None else int(last)


class StreamBlock(NamedTuple):
    """A run's stored events with ``after < seq <= until``, read set-based: the fixed-width
    v1 assignments (29 or 47 bytes long) as one ``bytes`` concatenated by the database in seq
    order, every other event as a ``StoredEvent`` (seq order)."""

    n_rows: int  # every event in the block
    seq_range: tuple[int, int] | None  # the smallest and largest seq (None: empty)
    n_fixed: int  # the fixed-width assignments in ``assignments``
    widths: tuple[int, int] | None  # their smallest and largest payload length
    assignments: bytes
    others: list[StoredEvent]


_FIXED = (
    f"x.type = {AssignmentRecorded.TYPE} AND x.version = {AssignmentRecorded.VERSION} "
    f"AND length(x.payload) IN ({ASSIGNMENT_WIDTH}, {LEGACY_ASSIGNMENT_WIDTH})"
)
# one range scan: the fixed-width payloads (NULL for the other events, which an aggregate
# skips) concatenated, and the counts that tell whether others must be read. Their widths
# follow from the concatenation's length (each is 29 or 47 bytes long: all are 29 iff it is
# 29 x their count, all 47 iff 47 x), cheaper than min/max aggregates. In seq order
# (``concat_payloads_sql`` over the ordered range), or where the backend has
# ``concat_payloads_with_seqs_sql`` in scan order, each payload followed by its seq.
_BLOCK = (
    "SELECT count(*), min(e.seq), max(e.seq), count(e.payload), {concat} "
    f"FROM (SELECT x.seq, CASE WHEN {_FIXED} THEN x.payload END AS payload "
    "FROM cs_events x WHERE x.run_id = :run AND x.seq > :after AND x.seq <= :until"
    "{order}) e"
)
_SEQ = np.dtype(">i8")  # the seq after each payload (``concat_payloads_with_seqs_sql``)


def read_stream_block(recorder: Recorder, run_id: UUID, *, after: int, until: int) -> StreamBlock:
    """The run's events with ``after < seq <= until`` as a ``StreamBlock``, in one read
    transaction: an aggregate over the range, then the other events (if any) row by row."""
    e = events
    others_q = (
        select(e.c.seq, e.c.type, e.c.version, cast(e.c.payload, LargeBinary))
        .where(and_(e.c.run_id == run_id, e.c.seq > after, e.c.seq <= until))
        .where(
            ~and_(
                e.c.type == AssignmentRecorded.TYPE,
                e.c.version == AssignmentRecorded.VERSION,
                func.length(e.c.payload).in_([ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH]),
            )
        )
        .order_by(e.c.seq)
    )
    unordered = recorder.concat_payloads_with_seqs_sql
    with recorder.transaction() as conn:
        params = {
            "run": UUIDType().process_bind_param(run_id, conn.dialect),
            "after": after,
            "until": until,
        }
        sql = _BLOCK.format(concat=unordered, order="") if unordered else _ordered_block(recorder)
        (row,) = recorder.fetch_all(conn, sql, params)
        n_rows, n_fixed = int(row[0]), int(row[3])
        data = bytes(row[4]) if n_fixed else b""
        if unordered and n_fixed:
            width = _record_width(len(data), n_fixed)
            if width is None:  # both widths (never written by clusterstore): in seq order
                (row,) = recorder.fetch_all(conn, _ordered_block(recorder), params)
                data = bytes(row[4])
            else:
                data = in_seq_order(data, width)
        others = []
        if n_rows > n_fixed:
            others = [
                StoredEvent(run_id, r[0], r[1], r[2], bytes(r[3])) for r in conn.execute(others_q)
            ]
    return StreamBlock(
        n_rows,
        (int(row[1]), int(row[2])) if n_rows else None,
        n_fixed,
        _widths(len(data), n_fixed),
        data,
        others,
    )


def _ordered_block(recorder: Recorder) -> str:
    return _BLOCK.format(concat=recorder.concat_payloads_sql, order=" ORDER BY x.seq")


def _record_width(total: int, n_fixed: int) -> int | None:
    """The payload width shared by ``n_fixed`` records of a payload and its 8-byte seq that
    add up to ``total`` bytes (None: both widths occur)."""
    for width in (ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH):
        if total == n_fixed * (width + _SEQ.itemsize):
            return width
    return None


def in_seq_order(data: bytes, width: int) -> bytes:
    """Records of a payload and its 8-byte seq (``concat_payloads_with_seqs_sql``),
    payloads in seq order."""
    return payloads_in_key_order(data, width, ">i8")


def _widths(total: int, n_fixed: int) -> tuple[int, int] | None:
    """The smallest and largest length of ``n_fixed`` payloads, each ``ASSIGNMENT_WIDTH`` or
    ``LEGACY_ASSIGNMENT_WIDTH`` long, that add up to ``total`` bytes."""
    if not n_fixed:
        return None
    for width in (ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH):
        if total == n_fixed * width:
            return width, width
    return ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH


def next_seq(recorder: Recorder, run_id: UUID, *, after: int) -> int | None:
    """The run's smallest stored seq above ``after`` (None: there is none)."""
    e = events
    with recorder.transaction() as conn:
        value = conn.execute(
            select(func.min(e.c.seq)).where(e.c.run_id == run_id, e.c.seq > after)
        ).scalar()
    return None if value is None else int(value)

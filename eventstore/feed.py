"""Bulk reads of the global feed, for consumers that apply whole batches (projections).

``read_feed_blocks`` returns the events after a global position as one block per commit
stretch, read with set-based SQL over the commits' seq ranges (``cs_commits`` joined to
``cs_events``): a few queries per call whatever the number of commits, and no Python object
per assignment. A block carries its fixed-width assignment payloads (the canonical 29-byte
layout, or the 47-byte one of imported assignments: ``codec``) concatenated by the database
in seq order, ready for ``codec.unpack_assignments``, and every other event as a
``StoredEvent``.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from uuid import UUID

import numpy as np
import numpy.typing as npt
from sqlalchemy import BigInteger, Connection, column, func, select, text

from . import schema
from .codec import ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH, payloads_in_key_order
from .errors import EventDecodeError
from .events import AssignmentRecorded
from .recorder import PAGE_SIZE, Recorder, StoredEvent


class FeedBlock(NamedTuple):
    """Events ``first_seq .. last_seq`` of one run, at global positions ``position ...``
    (one stretch of one commit), split for bulk consumers."""

    position: int
    run_id: UUID
    first_seq: int
    last_seq: int
    others: list[StoredEvent]  # every event but the fixed-width v1 assignments, seq order
    assignments: bytes | None  # those assignments' payloads in seq order (None: unread)
    width: int = ASSIGNMENT_WIDTH  # the payload width of ``assignments`` (29 or 47)
    damage: str | None = None  # why the block could not be read whole (``mark_damage``)

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def last_position(self) -> int:
        return self.position + self.size - 1

    @property
    def n_assignments(self) -> int:
        """The fixed-width v1 assignments in the block (``others`` may hold assignments of
        other sizes or versions). Nearly always in the canonical layout of their width; a
        consumer checks that with ``codec.unpack_assignments``, which refuses any other."""
        return self.size - len(self.others)

    def assignment_seqs(self) -> npt.NDArray[np.int64]:
        """The seqs of ``assignments``, record by record."""
        seqs = np.arange(self.first_seq, self.last_seq + 1, dtype=np.int64)
        if self.others:
            seqs = np.setdiff1d(seqs, [ev.seq for ev in self.others], assume_unique=True)
        return seqs


def read_feed_blocks(
    recorder: Recorder,
    *,
    after: int = 0,
    max_events: int = PAGE_SIZE,
    assignments: bool = True,
    conn: Connection | None = None,
    mark_damage: bool = False,
) -> list[FeedBlock]:
    """The global feed after position ``after`` (at most ``max_events`` events, in position
    order), as blocks. ``assignments=False`` skips reading the assignment payloads (their
    count is still known). Raises ``EventDecodeError`` if a block's payloads do not add up
    (events missing or changed around the store); with ``mark_damage`` such a block is
    returned with ``damage`` saying why and no payloads instead, so a consumer can skip its
    run and go on with the others."""
    with recorder.transaction(conn=conn) as c:
        ranges = _feed_ranges(c, after, max_events)
        if not ranges:
            return []
        params = {"lo": ranges[0][0], "after": after, "upto": ranges[-1][1].last_position}
        payloads: dict[int, tuple[int, bytes]] = {}
        fixed: dict[int, int] = {}  # commit position -> fixed-width assignments in range
        others: dict[int, list[StoredEvent]] = {}
        if assignments:
            offsets = recorder.concat_payloads_with_offsets_sql
            concat = offsets or recorder.concat_payloads_sql
            sql = _FEED_JOIN.format(
                select="c.position, count(*), min(length(e.payload)), max(length(e.payload)), "
                f"{concat}",
                where=f"AND {_FIXED_WIDTH}",
                tail="GROUP BY c.position ORDER BY c.position",
            )
            for position, count, lo, hi, data in recorder.fetch_all(c, sql, params):
                fixed[int(position)] = int(count)
                if lo == hi:
                    data = _in_seq_order(bytes(data), int(lo)) if offsets else bytes(data)
                    payloads[int(position)] = (int(lo), data)
                else:  # both widths in one commit (never written by clusterstore): one by one
                    payloads[int(position)] = (ASSIGNMENT_WIDTH, b"")
                    mixed = _events_query(
                        f"AND {_FIXED_WIDTH} AND c.position = {int(position)}", recorder
                    )
                    others[int(position)] = [_stored(r) for r in c.execute(mixed, params)]
        # the other events: only commits that are not all fixed-width assignments are scanned
        partial = [pos for pos, block in ranges if fixed.get(pos, 0) != block.size]
        if not assignments or len(partial) > _LIST_LIMIT:
            where = f"AND NOT ({_FIXED_WIDTH})"
        elif partial:
            where = f"AND NOT ({_FIXED_WIDTH}) AND c.position IN ({', '.join(map(str, partial))})"
        else:
            where = ""
        if where:
            for row in c.execute(_events_query(where, recorder), params):
                others.setdefault(row[0], []).append(_stored(row))
        for events in others.values():
            events.sort(key=lambda ev: ev.seq)
    blocks = []
    for commit_position, block in ranges:
        block = block._replace(others=others.get(commit_position, []))
        if assignments:
            width, data = payloads.get(commit_position, (ASSIGNMENT_WIDTH, b""))
            if len(data) != block.n_assignments * width:
                reason = (
                    f"the assignments of seqs {block.first_seq}..{block.last_seq} do not add up "
                    f"({len(data)} bytes for {block.n_assignments} records)"
                )
                if not mark_damage:
                    raise EventDecodeError(block.run_id, block.first_seq, reason)
                block = block._replace(assignments=b"", damage=reason)
            else:
                block = block._replace(assignments=data, width=width)
        blocks.append(block)
    return blocks


def _in_seq_order(data: bytes, width: int) -> bytes:
    """Records of a payload and its 4-byte seq offset
    (``Recorder.concat_payloads_with_offsets_sql``), payloads in seq order; ``b""`` when
    they do not add up (the caller reports the commit)."""
    return payloads_in_key_order(data, width, ">i4")


def _feed_ranges(conn: Connection, after: int, max_events: int) -> list[tuple[int, FeedBlock]]:
    """(commit position, block without its events) for the feed after ``after``."""
    c = schema.commits
    budget = max(1, max_events)
    first = conn.execute(select(func.max(c.c.position)).where(c.c.position <= after + 1)).scalar()
    rows = conn.execute(
        select(c.c.position, c.c.run_id, c.c.first_seq, c.c.count)
        .where(c.c.position >= (first or 0))
        .order_by(c.c.position)
        .limit(budget + 1)
    ).all()
    ranges: list[tuple[int, FeedBlock]] = []
    for position, run_id, first_seq, count in rows:
        if position + count - 1 <= after:
            continue
        start = max(after + 1, position)
        end = min(position + count - 1, start + budget - 1)
        seq0 = first_seq + start - position
        ranges.append((position, FeedBlock(start, run_id, seq0, seq0 + end - start, [], None)))
        budget -= end - start + 1
        if budget <= 0:
            break
    return ranges


# The events of the commits at positions lo..upto that lie at global positions after+1..upto:
# one index range scan of cs_events per commit, in (position, seq) order.
_FEED_JOIN = """
SELECT {select}
FROM cs_commits c JOIN cs_events e ON e.run_id = c.run_id
 AND e.seq >= c.first_seq
     + (CASE WHEN c.position <= :after THEN :after + 1 - c.position ELSE 0 END)
 AND e.seq <= c.first_seq
     + (CASE WHEN c.position + c.count - 1 > :upto THEN :upto - c.position ELSE c.count - 1 END)
WHERE c.position >= :lo AND c.position <= :upto {where}
{tail}
"""
_LIST_LIMIT = 1000  # commits named in an IN list; beyond, the whole range is scanned
_FIXED_WIDTH = (
    f"e.type = {AssignmentRecorded.TYPE} AND e.version = {AssignmentRecorded.VERSION} "
    f"AND length(e.payload) IN ({ASSIGNMENT_WIDTH}, {LEGACY_ASSIGNMENT_WIDTH})"
)


def _events_query(where: str, recorder: Recorder) -> Any:
    e = schema.events
    sql = _FEED_JOIN.format(
        select="c.position, e.run_id, e.seq, e.type, e.version, "
        f"{recorder.payload_sql}, c.first_seq",
        where=where,
        tail="ORDER BY c.position, e.seq",
    )
    return text(sql).columns(
        column("position", BigInteger),
        e.c.run_id,
        e.c.seq,
        e.c.type,
        e.c.version,
        e.c.payload,
        column("first_seq", BigInteger),
    )


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(row[1], row[2], row[3], row[4], bytes(row[5]), row[0] + row[2] - row[6])

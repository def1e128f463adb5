"""Bulk reads of the log for checking it (the audit): point reads by key, counts over one
run's key range, and the commits. SQLAlchemy Core over ``schema``, each inside
``Recorder.transaction`` (which converts driver errors); all cheap for a big run.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import func, select, tuple_

from .recorder import Recorder, StoredEvent
from .schema import commits, events

_IN_CHUNK = 400  # keys per IN list


def read_events_at(
    recorder: Recorder, keys: Sequence[tuple[UUID, int]]
) -> dict[tuple[UUID, int], StoredEvent]:
    """The stored events at the given (run_id, seq) keys (missing keys are left out)."""
    out: dict[tuple[UUID, int], StoredEvent] = {}
    e = events
    for lo in range(0, len(keys), _IN_CHUNK):
        chunk = list(keys[lo : lo + _IN_CHUNK])
        with recorder.transaction() as conn:
            rows = conn.execute(
                select(e.c.run_id, e.c.seq, e.c.type, e.c.version, e.c.payload).where(
                    tuple_(e.c.run_id, e.c.seq).in_(chunk)
                )
            ).all()
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

"""Step ``append``: the same N assignments through clusterstore's public API.

Before the clock: the store is created (``EventStore.open``) and the assignments are encoded
once (``pack_assignments``) and cut into ``PackedEvents`` batches of 100k. On the clock:
``EventStore.append(run_id, batch, expected_seq=head)`` per batch, each one transaction
(SQLite: one set-based statement per batch; PostgreSQL: one binary COPY per batch, plus the
commit row and position allocation under the table lock).
"""

from __future__ import annotations

import uuid_utils.compat as uu

from eventstore import EventStore

from .core import Clock, Measurement
from .synthetic import assignments, packed_batches


def append(backend: str, n: int, db_url: str) -> Measurement:
    batches = packed_batches(assignments(n))
    run_id = uu.uuid7()
    clock = Clock()
    with EventStore.open(db_url) as store:
        head = 0
        with clock.running():
            for batch in batches:
                head = store.append(run_id, batch, expected_seq=head).head
    if head != n:
        raise AssertionError(f"append wrote {head} events, expected {n}")
    return Measurement(n, clock.seconds)

"""Step ``append``: the same N assignments through clusterstore's public API.

Off the clock: the store is created (``EventStore.open``) and each batch of 100k is
generated and encoded (``pack_assignments`` -> ``PackedEvents``). On the clock:
``EventStore.append(run_id, batch, expected_seq=head)`` per batch, each its own
transaction (SQLite: one set-based statement per batch; PostgreSQL: one binary COPY per
batch, then the commit row and position allocation under the table lock).
"""

from __future__ import annotations

import uuid_utils.compat as uu

from clusterstore.eventstore import EventStore

from .core import Clock, Measurement
from .synthetic import assignment_batches, packed


def append(backend: str, n: int, db_url: str) -> Measurement:
    run_id = uu.uuid7()
    clock = Clock()
    head = 0
    with EventStore.open(db_url) as store:
        for rows in assignment_batches(n):
            batch = packed(rows)
            with clock.running():
                head = store.append(run_id, batch, expected_seq=head).head
    if head != n:
        raise AssertionError(f"append wrote {head} events, expected {n}")
    return clock.measurement(n)

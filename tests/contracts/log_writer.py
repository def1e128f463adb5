"""A writer process for the concurrency tests: ``python -m tests.contracts.log_writer``.

    python -m tests.contracts.log_writer DB RUN_ID SEED BATCHES

Prints ``ready`` once imported, waits until the file ``$LOG_WRITER_GO`` exists, opens the
store (so that several writers create a new database at the same moment), then appends
BATCHES batches (mostly packed assignments of random
size, sometimes a short list of events) to RUN_ID. Hooks inside the append transaction
hold some transactions open (before and after the position is allocated) and roll some
back deliberately (after the position is allocated). Prints one JSON line: the batches that
committed (first_seq, count, sha256 of the payloads) and the sha256 of those rolled back.
Imports only the library, so it starts quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from clusterstore.eventstore import EventStore, PackedEvents, RunFailed, pack_assignments
from clusterstore.eventstore.codec import encode

P_ROLLBACK = 0.12
P_HOLD = 0.12
HOLD_SECONDS = 0.04


class DeliberateRollback(Exception):
    """Raised inside the append transaction to roll it back."""


def digest(batch: PackedEvents | list[RunFailed]) -> str:
    if isinstance(batch, PackedEvents):
        return hashlib.sha256(batch.data).hexdigest()
    return hashlib.sha256(b"".join(encode(e).payload for e in batch)).hexdigest()


def make_batch(rng: np.random.Generator, i: int) -> PackedEvents | list[RunFailed]:
    if rng.random() < 0.15:
        now = datetime.now(UTC)
        return [
            RunFailed(error=f"{uuid.uuid4()}", last_seq=i, failed_at=now)
            for _ in range(int(rng.integers(1, 4)))
        ]
    n = int(rng.integers(1, 300))
    return pack_assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8),
        rng.integers(0, 50, n),
        rng.random(n, dtype=np.float32),
    )


def install_hooks(store: EventStore, rng: np.random.Generator) -> None:
    """Hold some append transactions open, roll some back (instance-level wrappers)."""
    rec: Any = store.recorder
    insert, after = rec._insert_events, rec._after_append

    def insert_then_maybe_hold(conn: Any, run_id: Any, first_seq: int, batch: Any) -> None:
        insert(conn, run_id, first_seq, batch)
        if rng.random() < P_HOLD:  # events written, no position yet
            time.sleep(HOLD_SECONDS)

    def after_then_maybe_hold_or_roll_back(conn: Any, position: int) -> None:
        after(conn, position)
        r = rng.random()
        if r < P_ROLLBACK:  # position allocated, commit row written: roll it all back
            raise DeliberateRollback
        if r < P_ROLLBACK + P_HOLD:  # hold the transaction open until COMMIT
            time.sleep(HOLD_SECONDS)

    rec._insert_events = insert_then_maybe_hold
    rec._after_append = after_then_maybe_hold_or_roll_back


def wait_for_go() -> None:
    print("ready", flush=True)
    go = os.environ["LOG_WRITER_GO"]
    while not os.path.exists(go):
        time.sleep(0.005)


def main(argv: list[str]) -> None:
    db, run_id, seed, batches = argv[0], uuid.UUID(argv[1]), int(argv[2]), int(argv[3])
    rng = np.random.default_rng(seed)
    wait_for_go()
    store = EventStore.open(db)
    install_hooks(store, rng)
    committed: list[tuple[int, int, str]] = []
    rolled_back: list[str] = []
    head = 0
    for i in range(batches):
        batch = make_batch(rng, i)
        try:
            result = store.append(run_id, batch, expected_seq=head)
        except DeliberateRollback:
            rolled_back.append(digest(batch))
            continue
        assert (result.first_seq, result.appended) == (head + 1, result.head - head)
        committed.append((result.first_seq, result.appended, digest(batch)))
        head = result.head
    store.close()
    print(json.dumps({"committed": committed, "rolled_back": rolled_back}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Catching the read models up *while* a command writes to the log, not after it.

``alongside(store)`` runs ``runner.follow`` on a background thread for the duration of a
``with`` block (a command's writing), so each committed batch of a run is projected while
the next one is computed, instead of the whole run being projected after the last commit.
Nothing about correctness changes: it is the ordinary runner (its lock, checkpoints, one
transaction per batch), only started earlier. The block's result never depends on it: when
the follower cannot run (another runner holds a projection) or fails, it stops quietly and
the caller's usual catch-up after the block does the work and reports any problem. It takes
no follower lock and stops when a `catch-up --follow` starts, which then carries on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from clusterstore.eventstore.store import EventStore

from .runner import DamageFn, follow

POLL_SECONDS = 0.1  # between looks at the log's head while the writer computes


@contextmanager
def alongside(
    store: EventStore, *, poll: float = POLL_SECONDS, on_damage: DamageFn | None = None
) -> Iterator[None]:
    """Follow the log on a background thread until the block ends (then stop after the
    batch in hand). Catch up once more after the block to be current. ``on_damage`` hears
    (on that thread) of each run the follower starts to skip (a damaged event)."""
    stop = threading.Event()

    def work() -> None:
        try:
            follow(store, poll=poll, stop=stop.is_set, on_damage=on_damage, yield_to_follower=True)
        except Exception:  # the caller's catch-up after the block reports it
            return

    thread = threading.Thread(target=work, name="clusterstore-project", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

"""How a projection runner waits for another one: bounded by the store's lock wait, and
announced while it lasts (``eventstore.waiting``).

Two kinds of runner hold a projection's lock (``locks``): a **one-off** catch-up (the
``projections catch-up`` command, or the end of ``cluster``, ``resume``, ``record``...),
which ends once it reached the head it saw; and a **follower** (``catch-up --follow``),
which never ends by itself. A follower also holds a second lock, ``<name>/follower``, for
its whole life, so others can tell which kind holds the projection:

- A **follower** behind a one-off catch-up waits for it to finish, then takes the lock;
  behind another follower it refuses at once (``refuse_second_follower``).
- A **one-off** catch-up behind a one-off waits until the holder reached the head this one
  saw, or ended (then takes over); behind a follower it waits until the follower reached
  that head, and if that takes longer than the bound it leaves the rest to the follower
  without an error (the follower projects it; the command that wrote the run does not fail).

A wait gives up (``DatabaseBusyError`` naming the holder) only when the holder made no
progress (its checkpoint did not move) for the whole lock wait: a long catch-up that keeps
applying batches is waited out, a stuck one is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from clusterstore.eventstore.errors import DatabaseBusyError
from clusterstore.eventstore.store import EventStore

from .locks import RunnerLock

FOLLOWER_SUFFIX = "/follower"
POLL = 0.2  # seconds between looks at the lock while waiting

PositionFn = Callable[[], int | None]  # the projection's checkpoint (None: not usable)


def follower_lock_name(name: str) -> str:
    """The lock a follower of projection ``name`` holds for its whole life."""
    return name + FOLLOWER_SUFFIX


def refuse_second_follower(name: str, holder: str | None) -> DatabaseBusyError:
    return DatabaseBusyError(
        f"projection {name} is already followed by another runner ({holder or 'unknown'}); "
        "stop it first (`clusterstore projections status` shows it)"
    )


def wait_for_lock(
    store: EventStore,
    name: str,
    lock: RunnerLock,
    position: PositionFn,
    *,
    done: Callable[[int | None], bool],
    follower: Callable[[], str | None] | None = None,
    stop: Callable[[], bool] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_every: timedelta = timedelta(seconds=30),
    bound: float | None = None,
) -> bool:
    """Take ``lock`` (True), or return False once ``done(checkpoint)`` is true or ``stop()``
    is. While another runner holds it: wait, announced, polling every ``POLL`` seconds;
    ``DatabaseBusyError`` once the checkpoint has not moved for the store's lock wait. If
    ``follower()`` names a follower, give up quietly (False) once the lock wait is over:
    the follower will project what this runner came for. ``heartbeat`` is called now and
    then (a follower keeps its follower lock fresh while it waits). ``bound``: the lock
    wait (default the store's)."""
    if lock.try_acquire():
        return True
    if bound is None:
        bound = store.lock_wait
    holder = lock.holder() or "unknown"
    with store.waiting_for(f"the runner of projection {name} ({holder})"):
        last = position()
        start = moved_at = beat_at = time.monotonic()
        while True:
            now_at = position()
            if done(now_at) or (stop is not None and stop()):
                return False
            now = time.monotonic()
            if now_at != last:
                last, moved_at = now_at, now
            if heartbeat is not None and now - beat_at > heartbeat_every.total_seconds():
                heartbeat()
                beat_at = now
            if now - start > bound and follower is not None and follower() is not None:
                return False  # the follower projects it
            if now - moved_at > bound:
                raise DatabaseBusyError(
                    f"projection {name} is being updated by another runner "
                    f"({lock.holder() or holder}) that made no progress for {bound:g} s "
                    "(the lock wait); gave up waiting, try again later or raise the bound "
                    "with --lock-wait (`clusterstore projections status` shows the runner)"
                )
            time.sleep(POLL)
            if lock.try_acquire():
                return True

"""Waiting for a lock: bounded by one setting, and visible while it lasts.

- **The bound** (``lock_wait_seconds``): how long anything that needs a lock held by another
  process waits before it gives up with one ``DatabaseBusyError``: a writer behind another
  writer (SQLite's write lock, PostgreSQL's row and table locks), and a projection runner
  behind another runner. The ``--lock-wait`` option or ``$CLUSTERSTORE_LOCK_WAIT`` (seconds),
  default ``DEFAULT_LOCK_WAIT``.
- **The deadline** (``deadline``): a call that retries (an append, ``initialise``) waits at
  most the bound in all, not the bound per try: its tries share one deadline, and the
  driver's own wait (SQLite's busy timeout) is cut to what is left of it (``remaining``).
- **The URL's own wait**: a PostgreSQL URL may set its sessions' ``lock_timeout`` itself (in
  its ``options``, as an administrator would for a role); the server then applies it instead
  of the bound, to each statement. ``busy_reason`` names whichever wait gave up.
- **The notice** (``announced``): while a wait lasts longer than ``GRACE`` seconds, a
  ``WaitNotifier`` is told what is waited for and for how long (from a timer thread, since
  the waiting thread is blocked inside the driver). The CLI prints it on a terminal only.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from .errors import ConfigurationError

LOCK_WAIT_ENV = "CLUSTERSTORE_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 60.0
MAX_LOCK_WAIT = 86_400.0  # a day: beyond it, a typo
GRACE = 1.0  # a wait shorter than this is not announced
EVERY = 1.0  # then the notice is renewed this often

_deadline: ContextVar[float | None] = ContextVar("clusterstore_lock_deadline", default=None)


def lock_wait_seconds(value: float | str | None = None) -> float:
    """The bound: ``value`` if given, else ``$CLUSTERSTORE_LOCK_WAIT``, else the default."""
    source = "--lock-wait"
    if value is None:
        value = os.environ.get(LOCK_WAIT_ENV) or None
        source = f"${LOCK_WAIT_ENV}"
    if value is None:
        return DEFAULT_LOCK_WAIT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds <= MAX_LOCK_WAIT):  # also NaN
        raise ConfigurationError(
            f"{source} must be a number of seconds above 0 and at most {MAX_LOCK_WAIT:g}, "
            f"got {value!r}"
        )
    return seconds


def busy_reason(bound: float, url_wait: float | None, *, retried: bool) -> str:
    """Why a write gave up waiting for another writer's lock, naming the wait that applied
    and how to change it. ``url_wait``: the lock timeout the database URL sets for its
    sessions in place of the bound (None: the bound's own). ``retried``: the write was
    tried again until the bound had passed (an append), so a shorter URL wait did not end
    it."""
    if url_wait is None or (retried and url_wait <= bound):
        return (
            f"the database is locked by another writer; gave up waiting for it (the lock "
            f"wait is {bound:g} s), nothing was written (retry later, or raise the bound "
            f"with --lock-wait or ${LOCK_WAIT_ENV})"
        )
    return (
        f"the database is locked by another writer; gave up waiting for it after "
        f"{url_wait:g} s, the lock_timeout set in the database URL's options (it overrides "
        f"the lock wait of {bound:g} s), nothing was written (retry later, or raise "
        f"lock_timeout in the URL's options, or remove it to wait as long as --lock-wait or "
        f"${LOCK_WAIT_ENV} says)"
    )


class WaitNotifier(Protocol):
    def waiting(self, what: str, waited: float, bound: float) -> None:
        """Still waiting for ``what``, ``waited`` seconds so far, giving up at ``bound``."""

    def done(self) -> None:
        """The wait announced by ``waiting`` is over (got the lock, or gave up)."""


@contextmanager
def deadline(bound: float) -> Iterator[None]:
    """Every wait inside shares one deadline, ``bound`` seconds from now (an enclosing
    deadline that comes sooner wins)."""
    end = time.monotonic() + bound
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(bound: float) -> float:
    """Seconds a wait may still take: what is left of the current ``deadline``, or
    ``bound`` outside one (never below zero)."""
    end = _deadline.get()
    if end is None:
        return bound
    return max(0.0, min(bound, end - time.monotonic()))


def expired() -> bool:
    """True once the current ``deadline`` has passed (False outside one)."""
    end = _deadline.get()
    return end is not None and time.monotonic() >= end


@contextmanager
def announced(
    notifier: WaitNotifier | None, what: str, bound: float | Callable[[], float]
) -> Iterator[None]:
    """Run the block; if it takes longer than ``GRACE`` seconds, tell ``notifier`` every
    ``EVERY`` seconds that ``what`` is waited for, and ``done()`` when the block ends.
    ``bound``: when the wait gives up (a callable is asked once, when first announced)."""
    if notifier is None:
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        if stop.wait(GRACE):
            return
        try:
            limit = bound() if callable(bound) else bound
            while True:
                notifier.waiting(what, time.monotonic() - start, limit)
                if stop.wait(EVERY):
                    return
        finally:
            notifier.done()

    thread = threading.Thread(target=tick, name="clusterstore-wait-notice", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

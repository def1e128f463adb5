"""One runner per projection at a time.

- Where the database has session locks (``EventStore.has_session_locks``; PostgreSQL's
  advisory locks, keyed by the projection name and the current schema): one held by the
  runner's connection. The server releases it when the connection ends, also after a
  SIGKILL.
- Elsewhere (SQLite): a row in ``pj_lock`` written in a write transaction (SQLite's
  ``BEGIN IMMEDIATE``), naming host, pid and a per-runner token. A row whose process is
  gone (same host) or whose heartbeat is older than ``LOCK_TTL`` is stale and taken over.
  Every batch re-checks the row inside its own write transaction, so a runner that lost
  its lock cannot commit.

Either way the checkpoint update is also guarded by the previous position, so even a
wrongly broken lock cannot apply a batch twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from clusterstore.eventstore.errors import DatabaseBusyError, EventStoreError
from clusterstore.eventstore.schema import utc
from clusterstore.eventstore.store import EventStore

from . import schema

LOCK_TTL = timedelta(seconds=120)


class RunnerLock(ABC):
    def __init__(self, store: EventStore, conn: Connection, name: str):
        self.store = store
        self.conn = conn
        self.name = name
        self.held = False

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it (no waiting)."""

    @abstractmethod
    def release(self) -> None: ...

    @abstractmethod
    def check(self, conn: Connection) -> None:
        """Inside a write transaction: make sure the lock is still ours."""

    @abstractmethod
    def holder(self) -> str | None:
        """Who holds the lock now (for messages and ``status``), or None."""


def make_lock(store: EventStore, conn: Connection, name: str) -> RunnerLock:
    if store.has_session_locks:
        return SessionLock(store, conn, name)
    return RowLock(store, conn, name)


# ---------------------------------------------------------------------------- session lock


class SessionLock(RunnerLock):
    """A lock the database holds for the life of the runner's connection (PostgreSQL's
    advisory locks): freed by the server when the connection ends, also after a SIGKILL."""

    def try_acquire(self) -> bool:
        with self.store.transaction(conn=self.conn) as c:
            self.held = self.store.try_session_lock(c, self.name)
        return self.held

    def release(self) -> None:
        if self.held:
            self.held = False
            # a lost connection has freed it already
            with (
                contextlib.suppress(EventStoreError),
                self.store.transaction(conn=self.conn) as c,
            ):
                self.store.release_session_lock(c, self.name)

    def check(self, conn: Connection) -> None:
        """Nothing: the session lock lives as long as this connection, which runs the batch."""

    def holder(self) -> str | None:
        with self.store.transaction() as c:
            return self.store.session_lock_holder(c, self.name)


# ---------------------------------------------------------------------------- lock row


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RowLock(RunnerLock):
    def __init__(self, store: EventStore, conn: Connection, name: str):
        super().__init__(store, conn, name)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"

    def try_acquire(self) -> bool:
        t = schema.locks
        now = datetime.now(UTC)
        with self.store.transaction(write=True, conn=self.conn) as c:
            row = c.execute(select(t).where(t.c.name == self.name)).first()
            if row is not None and row.owner != self.token and not _stale(row, now):
                return False
            c.execute(delete(t).where(t.c.name == self.name))
            c.execute(
                t.insert().values(
                    name=self.name,
                    owner=self.token,
                    host=self.host,
                    pid=self.pid,
                    acquired_at=now,
                    heartbeat_at=now,
                )
            )
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            t = schema.locks
            # if this fails, the row goes stale and the next runner takes it over
            with (
                contextlib.suppress(EventStoreError),
                self.store.transaction(write=True, conn=self.conn) as c,
            ):
                c.execute(delete(t).where(t.c.name == self.name, t.c.owner == self.token))

    def check(self, conn: Connection) -> None:
        t = schema.locks
        result = conn.execute(
            update(t)
            .where(t.c.name == self.name, t.c.owner == self.token)
            .values(heartbeat_at=datetime.now(UTC))
        )
        if result.rowcount != 1:
            self.held = False
            raise DatabaseBusyError(
                f"projection {self.name}: this runner's lock was taken over by another runner "
                "(was this process suspended?); the batch was not applied"
            )

    def holder(self) -> str | None:
        with self.store.transaction() as c:
            return row_holder(c, self.name)


def row_holder(conn: Connection, name: str) -> str | None:
    t = schema.locks
    row = conn.execute(select(t).where(t.c.name == name)).first()
    if row is None or _stale(row, datetime.now(UTC)):
        return None
    return f"pid {row.pid} on {row.host}"


def _stale(row: object, now: datetime) -> bool:
    host: str = row.host  # type: ignore[attr-defined]
    pid: int = row.pid  # type: ignore[attr-defined]
    beat: datetime = utc(row.heartbeat_at)  # type: ignore[attr-defined]
    if host == socket.gethostname() and not _pid_alive(pid):
        return True
    return now - beat > LOCK_TTL

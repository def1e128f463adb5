"""One runner per projection at a time.

- PostgreSQL: a session-level advisory lock held by the runner's connection, keyed by the
  projection name and the current schema (tests run many schemas in one database). The
  server releases it when the connection ends, also after a SIGKILL.
- SQLite: a row in ``pj_lock`` written under ``BEGIN IMMEDIATE``, naming host, pid and a
  per-runner token. A row whose process is gone (same host) or whose heartbeat is older
  than ``LOCK_TTL`` is stale and taken over. Every batch re-checks the row inside its own
  write transaction, so a runner that lost its lock cannot commit.

Either way the checkpoint update is also guarded by the previous position, so even a
wrongly broken lock cannot apply a batch twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select, text, update

from clusterstore.eventstore.errors import DatabaseBusyError, EventStoreError
from clusterstore.eventstore.recorder import Recorder

from . import schema

LOCK_TTL = timedelta(seconds=120)


class RunnerLock(ABC):
    def __init__(self, recorder: Recorder, conn: Connection, name: str):
        self.recorder = recorder
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


def make_lock(recorder: Recorder, conn: Connection, name: str) -> RunnerLock:
    if recorder.dialect_name == "postgresql":
        return AdvisoryLock(recorder, conn, name)
    return RowLock(recorder, conn, name)


# ---------------------------------------------------------------------------- PostgreSQL


def advisory_key(schema_name: str, name: str) -> int:
    digest = hashlib.sha256(f"clusterstore/projection/{schema_name}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock(RunnerLock):
    def _key(self, conn: Connection) -> int:
        return advisory_key(_current_schema(conn), self.name)

    def try_acquire(self) -> bool:
        with self.recorder.transaction(conn=self.conn) as c:
            got = c.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key(c)}).scalar()
        self.held = bool(got)
        return self.held

    def release(self) -> None:
        if self.held:
            self.held = False
            # a lost connection has freed it already
            with (
                contextlib.suppress(EventStoreError),
                self.recorder.transaction(conn=self.conn) as c,
            ):
                c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key(c)})

    def check(self, conn: Connection) -> None:
        """Nothing: the session lock lives as long as this connection, which runs the batch."""

    def holder(self) -> str | None:
        with self.recorder.transaction() as c:
            return advisory_holder(c, self.name)


def _current_schema(conn: Connection) -> str:
    return str(conn.exec_driver_sql("SELECT current_schema()").scalar())


def advisory_holder(conn: Connection, name: str) -> str | None:
    key = advisory_key(_current_schema(conn), name)
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        text(
            "SELECT l.pid, a.client_addr, a.backend_start FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = :hi AND l.objid = :lo AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return None
    where = f" from {row[1]}" if row[1] else ""
    return f"PostgreSQL backend pid {row[0]}{where}"


# ---------------------------------------------------------------------------- SQLite


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RowLock(RunnerLock):
    def __init__(self, recorder: Recorder, conn: Connection, name: str):
        super().__init__(recorder, conn, name)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"

    def try_acquire(self) -> bool:
        t = schema.locks
        now = datetime.now(UTC)
        with self.recorder.transaction(write=True, conn=self.conn) as c:
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
                self.recorder.transaction(write=True, conn=self.conn) as c,
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
        with self.recorder.transaction() as c:
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
    beat: datetime = row.heartbeat_at  # type: ignore[attr-defined]
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    if host == socket.gethostname() and not _pid_alive(pid):
        return True
    return now - beat > LOCK_TTL

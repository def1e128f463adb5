"""SQLite's locks: ``database is locked`` never reaches the user while another writer
finishes, and a second store opened in one process does not drop the first one's locks.

Writers wait in two layers: SQLite's busy timeout, then ``append_events`` retries with
backoff (safe: an append is idempotent). Here the busy timeout is cut to 20 ms so the
retry layer is what waits: another connection holds the write lock until the store has
been refused once, then lets go; the append goes through. A lock that is never released
ends, after the retries, in one clear ``DatabaseBusyError``. Many processes at once (CLI
writers, a follower, readers) are the load harness's part (test_harness.py).

Closing any descriptor of a file drops all the POSIX locks the process holds on it, so a
header check with ``open()`` while the process has the store open lets another process,
closing its last connection, delete the -wal and -shm files under the live connections
(found by the harness as "database disk image is malformed").
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from clusterstore.eventstore import DatabaseBusyError, EventStore
from clusterstore.eventstore.recorder import APPEND_RETRIES
from tests.contracts.support import assignments

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clusterstore.eventstore.sqlite.BUSY_TIMEOUT_MS", 20)


class Refusals:
    """Wraps a recorder's ``_append_once``: counts DatabaseBusyError, runs a callback on
    the first one."""

    def __init__(self, store: EventStore, on_first: Any = None):
        self.real = store.recorder._append_once
        self.count = 0
        self.on_first = on_first

    def __call__(self, *args: Any) -> Any:
        try:
            return self.real(*args)
        except DatabaseBusyError:
            self.count += 1
            if self.count == 1 and self.on_first is not None:
                self.on_first()
            raise


def hold_write_lock(path: Path) -> tuple[sqlite3.Connection, threading.Event, threading.Thread]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    release = threading.Event()

    def holder() -> None:
        release.wait(60)
        conn.execute("COMMIT")

    thread = threading.Thread(target=holder)
    thread.start()
    return conn, release, thread


def test_a_writer_waits_out_a_lock_held_past_the_busy_timeout(
    impatient: None, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = assignments(500)
    with EventStore.open(db_url) as store:
        conn, release, thread = hold_write_lock(Path(db_url))
        refusals = Refusals(store, on_first=release.set)
        monkeypatch.setattr(store.recorder, "_append_once", refusals)
        try:
            run = uuid.uuid4()
            result = store.append(run, a.packed(), expected_seq=0)
        finally:
            release.set()
            thread.join()
            conn.close()
        assert refusals.count >= 1  # the lock really was met, and waited out
        assert (result.head, result.appended) == (500, 500)
        assert b"".join(e.payload for e in store.read_raw(run)) == a.packed().data


def test_a_lock_that_is_never_released_is_one_clear_error(
    impatient: None, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eventstore.recorder.time.sleep", lambda s: None)  # no real backoff
    with EventStore.open(db_url) as store:
        conn, release, thread = hold_write_lock(Path(db_url))
        refusals = Refusals(store)
        monkeypatch.setattr(store.recorder, "_append_once", refusals)
        run = uuid.uuid4()
        try:
            with pytest.raises(DatabaseBusyError) as info:
                store.append(run, assignments(5).packed(), expected_seq=0)
        finally:
            release.set()
            thread.join()
            conn.close()
        assert refusals.count == APPEND_RETRIES
        assert str(info.value) == (
            f"{db_url}: run {run} could not be appended to after {APPEND_RETRIES} attempts; "
            "another writer keeps the database locked"
        )
        assert store.head(run) == 0  # nothing half-written
        # and once the lock is gone, the same append goes through
        assert store.append(run, assignments(5).packed(), expected_seq=0).head == 5


CHILD_APPENDS = """
import sys, uuid
from clusterstore.eventstore import EventStore
from tests.contracts.support import assignments
with EventStore.open(sys.argv[1]) as s:
    s.append(uuid.uuid4(), assignments(10).packed(), expected_seq=0)
"""
COUNT = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute({!r}).fetchone()[0])"


def test_a_second_store_in_one_process_keeps_the_first_ones_locks(
    db_url: str, subprocess_env: dict[str, str]
) -> None:
    def child(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code, db_url],
            env=subprocess_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    run = uuid.uuid4()
    with EventStore.open(db_url) as first:
        first.append(run, assignments(100).packed(), expected_seq=0)
        EventStore.open(db_url).close()  # e.g. a CLI command run in-process
        child(CHILD_APPENDS)  # another process writes and closes its last connection
        assert Path(db_url + "-wal").exists()  # not deleted under first's connections
        first.append(run, assignments(100, seed=1).packed(), expected_seq=100)
        # what first committed is what every other process sees
        assert child(COUNT.format("SELECT count(*) FROM cs_events")) == "210"
        assert child(COUNT.format("PRAGMA integrity_check")) == "ok"

"""SQLite's locks: a writer behind another writer's lock waits for it, says so on a
terminal, and gives up after the lock wait (one setting: ``--lock-wait`` /
``$CLUSTERSTORE_LOCK_WAIT``, ``eventstore.waiting``) with one clear error; a second store
opened in one process does not drop the first one's locks.

A writer waits inside SQLite's busy handler, whose timeout is what is left of the append's
deadline (its retries share one deadline: the bound is the bound, not the bound per try).
Here another connection holds the write lock: released when the writer announces its wait,
the append goes through; never released, the append ends after the bound (set to 1 s) in
one ``DatabaseBusyError`` that names the cause and the setting. Many processes at once (CLI
writers, a follower, readers) are the load harness's part (test_harness.py).

Closing any descriptor of a file drops all the POSIX locks the process holds on it, so a
header check with ``open()`` while the process has the store open lets another process,
closing its last connection, delete the -wal and -shm files under the live connections
(found by the harness as "database disk image is malformed").
"""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clusterstore.cli.main import cli
from clusterstore.eventstore import ConfigurationError, DatabaseBusyError, EventStore, waiting
from tests.contracts.support import assignments

pytestmark = pytest.mark.sqlite_only

BOUND = 1.0  # the lock wait these cases set: the error must come, whenever it comes
WAITING = "waiting for another writer to release the database lock"


class Notices:
    """A ``WaitNotifier`` that records what it is told, and runs a callback on the first."""

    def __init__(self, on_first: Callable[[], None] | None = None):
        self.told: list[tuple[str, float]] = []
        self.done_count = 0
        self.on_first = on_first

    def waiting(self, what: str, waited: float, bound: float) -> None:
        self.told.append((what, bound))
        if len(self.told) == 1 and self.on_first is not None:
            self.on_first()

    def done(self) -> None:
        self.done_count += 1


@pytest.fixture
def prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Announce a wait at once (not after a second)."""
    monkeypatch.setattr(waiting, "GRACE", 0.01)
    monkeypatch.setattr(waiting, "EVERY", 0.05)


def hold_write_lock(path: Path) -> tuple[sqlite3.Connection, threading.Event, threading.Thread]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    release = threading.Event()

    def holder() -> None:
        release.wait(120)
        conn.execute("COMMIT")

    thread = threading.Thread(target=holder)
    thread.start()
    return conn, release, thread


def test_a_writer_waits_for_a_held_lock_and_says_so(prompt: None, db_url: str) -> None:
    a = assignments(500)
    EventStore.open(db_url).close()
    conn, release, thread = hold_write_lock(Path(db_url))
    notices = Notices(on_first=release.set)  # the holder lets go once the wait is announced
    try:
        with EventStore.open(db_url, lock_wait=60, on_wait=notices) as store:
            run = uuid.uuid4()
            result = store.append(run, a.packed(), expected_seq=0)
            assert (result.head, result.appended) == (500, 500)
            assert b"".join(e.payload for e in store.read_raw(run)) == a.packed().data
    finally:
        release.set()
        thread.join()
        conn.close()
    # the lock really was met, announced, and waited out
    assert notices.told[0] == ("another writer to release the database lock", 60)
    assert notices.done_count == 1


def test_a_lock_that_is_never_released_is_one_clear_error_after_the_bound(
    prompt: None, db_url: str
) -> None:
    EventStore.open(db_url).close()
    notices = Notices()
    with EventStore.open(db_url, lock_wait=BOUND, on_wait=notices) as store:
        conn, release, thread = hold_write_lock(Path(db_url))
        run = uuid.uuid4()
        try:
            with pytest.raises(DatabaseBusyError) as info:
                store.append(run, assignments(5).packed(), expected_seq=0)
        finally:
            release.set()
            thread.join()
            conn.close()
        assert str(info.value) == (
            f"{db_url}: run {run}: the database is locked by another writer; gave up waiting "
            "for it (the lock wait is 1 s), nothing was written (retry later, or raise the "
            "bound with --lock-wait or $CLUSTERSTORE_LOCK_WAIT)"
        )
        assert {what for what, _ in notices.told} == {WAITING.removeprefix("waiting for ")}
        assert notices.done_count == 1
        assert store.head(run) == 0  # nothing half-written
        # and once the lock is gone, the same append goes through
        assert store.append(run, assignments(5).packed(), expected_seq=0).head == 5


def test_the_bound_is_the_whole_wait_not_a_wait_per_try(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append retries a refused lock, but every try shares one deadline: each try's busy
    timeout is what is left of it, so the tries together never wait past the bound."""
    EventStore.open(db_url).close()
    with EventStore.open(db_url, lock_wait=BOUND) as store:
        conn, release, thread = hold_write_lock(Path(db_url))
        timeouts: list[float] = []
        real = waiting.remaining

        def remaining(bound: float) -> float:
            left = real(bound)
            timeouts.append(left)
            return left

        monkeypatch.setattr(waiting, "remaining", remaining)
        try:
            with pytest.raises(DatabaseBusyError):
                store.append(uuid.uuid4(), assignments(5).packed(), expected_seq=0)
        finally:
            release.set()
            thread.join()
            conn.close()
        assert timeouts and all(t <= BOUND for t in timeouts)
        assert timeouts == sorted(timeouts, reverse=True)  # one deadline, running out


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon", "1e9"])
def test_a_bad_lock_wait_is_refused(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "new.db")
    result = CliRunner().invoke(cli, ["--db", db, "--lock-wait", value, "init"])
    assert result.exit_code != 0
    assert "--lock-wait" in result.output and "Traceback" not in result.output
    monkeypatch.setenv(waiting.LOCK_WAIT_ENV, value)
    with pytest.raises(ConfigurationError, match=r"\$CLUSTERSTORE_LOCK_WAIT must be a number"):
        EventStore.open(db)
    assert not Path(db).exists()


CLUSTER = ["cluster", "{input}", "--model", "m", "--k", "3", "--seed", "1"]


def _cluster_behind_a_held_lock(
    db_url: str, tmp_path: Path, env: dict[str, str], *, tty: bool, extra: list[str]
) -> tuple[int, str]:
    """``clusterstore --lock-wait 1 cluster ...`` while another connection holds the write
    lock: (exit code, what it wrote to stderr); stderr is a terminal when ``tty``."""
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32))
    EventStore.open(db_url).close()
    args = [sys.executable, "-m", "clusterstore", "--db", db_url, "--lock-wait", "1"]
    args += [a.format(input=path) for a in CLUSTER] + extra
    conn, release, thread = hold_write_lock(Path(db_url))
    try:
        if not tty:
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
            return done.returncode, done.stderr
        leader, follower = pty.openpty()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        out = b""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        os.close(leader)
        return proc.wait(timeout=60), out.decode(errors="replace")
    finally:
        release.set()
        thread.join()
        conn.close()


def test_the_cli_on_a_terminal_says_what_it_waits_for_then_one_error(
    db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    code, err = _cluster_behind_a_held_lock(db_url, tmp_path, subprocess_env, tty=True, extra=[])
    assert code == 1, err
    assert WAITING in err and "gives up after 1 s" in err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "Error" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("Error: ")
    assert (
        "the database is locked by another writer; gave up waiting for it (the lock wait is 1 s)"
        in err
    )
    assert "Traceback" not in err
    with EventStore.open(db_url) as store:
        assert store.runs() == []  # nothing was written


@pytest.mark.parametrize("tty, extra", [(False, []), (True, ["--quiet"])])
def test_the_cli_is_quiet_about_waiting_off_a_terminal_or_with_quiet(
    db_url: str, tmp_path: Path, subprocess_env: dict[str, str], tty: bool, extra: list[str]
) -> None:
    code, err = _cluster_behind_a_held_lock(db_url, tmp_path, subprocess_env, tty=tty, extra=extra)
    assert code == 1, err
    assert WAITING not in err and "gives up after" not in err
    assert err.strip().splitlines()[-1].startswith("Error: ")
    assert "gave up waiting for it (the lock wait is 1 s)" in err


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

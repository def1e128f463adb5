"""Waiting is bounded and visible, on both backends (``eventstore.waiting``,
``projections.waits``): one setting, the lock wait (``--lock-wait``,
``$CLUSTERSTORE_LOCK_WAIT``), bounds a writer behind another writer's lock (SQLite's write
lock; PostgreSQL's ``lock_timeout``) and a projection runner behind another runner; a wait
is announced to the store's notifier; a follower waits for a one-off catch-up instead of
refusing, and a one-off catch-up leaves to a follower what the follower will project.

The bound is set to 1 s (or less) where a case waits for it to pass: the assertions are on
what ends the wait and what it says, never on how long it took."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import DatabaseBusyError, EventStore, waiting
from clusterstore.projections.locks import RunnerLock, make_lock
from clusterstore.projections.waits import follower_lock_name
from tests.contracts.support import assignments
from tests.pj_util import make_run
from tests.test_pg_copy_errors import with_option

PATIENCE = 120.0  # how long a case waits for something that must happen (never asserted)
WHAT = {  # what a writer behind a held log lock says it waits for
    "sqlite": "another writer to release the database lock",
    "postgresql": "another writer to commit its position in the log",
}


class Notices:
    def __init__(self) -> None:
        self.told: list[str] = []

    def waiting(self, what: str, waited: float, bound: float) -> None:
        self.told.append(what)

    def done(self) -> None:
        pass


@pytest.fixture(autouse=True)
def prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Announce a wait at once (not after a second)."""
    monkeypatch.setattr(waiting, "GRACE", 0.01)
    monkeypatch.setattr(waiting, "EVERY", 0.05)


@contextmanager
def log_lock_held(db_url: str) -> Iterator[None]:
    """Another connection holds what an append needs last: the write lock (SQLite) or the
    lock on the commit positions (PostgreSQL), in an open write transaction."""
    with EventStore.open(db_url) as holder, holder.recorder.transaction(write=True) as c:
        holder.recorder._allocate_position(c)
        yield


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "it did not happen"
        time.sleep(0.05)


def test_a_writer_behind_a_held_lock_gives_up_after_the_bound(db_url: str) -> None:
    EventStore.open(db_url).close()
    notices = Notices()
    with EventStore.open(db_url, lock_wait=1, on_wait=notices) as store:
        run = uuid.uuid4()
        with log_lock_held(db_url), pytest.raises(DatabaseBusyError) as info:
            store.append(run, assignments(5).packed(), expected_seq=0)
        assert str(info.value) == (
            f"{store.display_url}: run {run}: the database is locked by another writer; gave "
            "up waiting for it (the lock wait is 1 s), nothing was written (retry later, or "
            "raise the bound with --lock-wait or $CLUSTERSTORE_LOCK_WAIT)"
        )
        assert WHAT[store.backend] in notices.told
        assert store.head(run) == 0
        assert store.append(run, assignments(5).packed(), expected_seq=0).head == 5


@pytest.mark.postgres_only
def test_a_lock_timeout_in_the_url_is_the_wait_the_message_names(db_url: str) -> None:
    """The URL's own ``lock_timeout`` (in its options, as an administrator sets it for a
    role) overrides the lock wait on the server. Before: the message quoted the lock wait
    (1 s) although the URL's 2 s had applied, and told to raise --lock-wait, which could
    not help."""
    EventStore.open(db_url).close()
    told: list[float] = []

    class Bounds(Notices):
        def waiting(self, what: str, waited: float, bound: float) -> None:
            told.append(bound)

    url = with_option(db_url, "lock_timeout=2000")
    with EventStore.open(url, lock_wait=1, on_wait=Bounds()) as store:
        run = uuid.uuid4()
        with log_lock_held(db_url), pytest.raises(DatabaseBusyError) as info:
            store.append(run, assignments(5).packed(), expected_seq=0)
        assert str(info.value) == (
            f"{store.display_url}: run {run}: the database is locked by another writer; gave "
            "up waiting for it after 2 s, the lock_timeout set in the database URL's options "
            "(it overrides the lock wait of 1 s), nothing was written (retry later, or raise "
            "lock_timeout in the URL's options, or remove it to wait as long as --lock-wait "
            "or $CLUSTERSTORE_LOCK_WAIT says)"
        )
        assert told and set(told) == {2.0}  # the notice gives the same bound
        assert store.head(run) == 0


def test_the_cli_takes_the_lock_wait_from_the_environment(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32))
    EventStore.open(db_url).close()
    args = ["--db", db_url, "cluster", str(path), "--model", "m", "--k", "3", "--quiet"]
    with log_lock_held(db_url):
        result = CliRunner().invoke(cli, args, env={waiting.LOCK_WAIT_ENV: "1"})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [x for x in lines if x.startswith("Error")] == [lines[-1]]
    assert (
        "the database is locked by another writer; gave up waiting for it (the lock " in lines[-1]
    )
    assert "(the lock wait is 1 s)" in lines[-1]
    with EventStore.open(db_url) as store:
        assert store.runs() == []


@contextmanager
def holding(store: EventStore, *names: str) -> Iterator[list[RunnerLock]]:
    """Locks of the projection runner kind, taken on a connection of their own."""
    with store.connection() as conn:
        locks = [make_lock(store, conn, name) for name in names]
        assert all(lock.try_acquire() for lock in locks)
        try:
            yield locks
        finally:
            for lock in locks:
                lock.release()


@contextmanager
def following(store: EventStore) -> Iterator[list[BaseException]]:
    """``projections.follow`` in a thread until the block ends; what it raised."""
    stop = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            projections.follow(store, ["embeddingcluster"], stop=stop.is_set, poll=0.05)
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield raised
    finally:
        stop.set()
        thread.join(PATIENCE)
        assert not thread.is_alive()


def lag(store: EventStore) -> int:
    return {s.name: s.lag for s in projections.status(store)}["embeddingcluster"]


def test_a_follower_waits_for_a_one_off_catch_up_then_follows(db_url: str) -> None:
    """Before: ``catch-up --follow`` refused at once while, e.g., ``cluster`` ran its own
    catch-up (the load harness restarted its follower around it). Now it waits, says so,
    takes over when the one-off ends, and keeps following."""
    EventStore.open(db_url).close()
    notices = Notices()
    with EventStore.open(db_url, on_wait=notices) as store, ExitStack() as one_off:
        make_run(store, 5, seed=1)
        projections.catch_up_all(store)
        one_off.enter_context(holding(store, "embeddingcluster"))  # a one-off at work
        make_run(store, 5, seed=2)
        with following(store) as raised:
            waits = "the runner of projection embeddingcluster ("
            eventually(lambda: any(t.startswith(waits) for t in notices.told) or bool(raised))
            assert raised == []
            assert lag(store) > 0
            one_off.close()  # the one-off catch-up ends
            eventually(lambda: lag(store) == 0 or bool(raised))
            make_run(store, 5, seed=3)  # and the follower keeps following
            eventually(lambda: lag(store) == 0 or bool(raised))
            assert raised == []


def test_a_second_follower_is_refused_at_once(db_url: str) -> None:
    EventStore.open(db_url).close()
    with EventStore.open(db_url) as store, following(store) as raised:
        eventually(
            lambda: (
                {s.name: s.runner for s in projections.status(store)}["embeddingcluster"]
                is not None
            )
        )
        with pytest.raises(DatabaseBusyError) as info:
            projections.follow(store, ["embeddingcluster"], stop=lambda: False)
        assert str(info.value).startswith(
            "projection embeddingcluster is already followed by another runner ("
        )
        assert raised == []


def test_a_one_off_catch_up_leaves_a_run_to_the_follower(db_url: str, tmp_path: Path) -> None:
    """A follower holds the projection and has not reached the new head within the lock
    wait (here: it is stalled): the one-off catch-up, e.g. the end of ``cluster``, ends
    without an error and without a warning; the follower projects the run."""
    EventStore.open(db_url).close()
    with EventStore.open(db_url) as store:
        projections.catch_up_all(store)  # the read-model tables exist
        names = [n for name in projections.NAMES for n in (name, follower_lock_name(name))]
        with holding(store, *names):
            make_run(store, 5, seed=1)
            assert projections.catch_up(store, wait=0.3) == {
                "clusteringresult": 0,
                "embeddingcluster": 0,
            }
            path = tmp_path / "emb.npy"
            np.save(path, np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32))
            args = ["--db", db_url, "--lock-wait", "0.5", "cluster", str(path), "--model", "m"]
            result = CliRunner().invoke(cli, [*args, "--k", "3", "--quiet"])
            assert result.exit_code == 0, result.output
            assert "Warning: the log is written, but the read models" not in result.output
        assert lag(store) > 0  # left to the follower


def test_the_python_api_takes_the_lock_wait(db_url: str) -> None:
    import clusterstore

    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    with clusterstore.open(db_url, lock_wait=1) as store:
        with log_lock_held(db_url), pytest.raises(DatabaseBusyError, match=r"lock wait is 1 s"):
            store.cluster(x, model="m", k=3, seed=1)
        assert store.runs() == []

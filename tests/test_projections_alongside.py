"""``projections.alongside``: the read models follow the log while a run is written; after
the block and the usual catch-up they are exactly what a catch-up after the run gives, and
a follower that cannot run (another runner holds a projection) never fails the block."""

from __future__ import annotations

import threading
import time

from clusterstore import projections
from clusterstore.eventstore import EventStore
from clusterstore.projections.runner import Runner

from .pj_util import make_run, snapshot


def test_following_the_writer_equals_a_catch_up_after(store: EventStore) -> None:
    with projections.alongside(store, poll=0.01):
        make_run(store, 300, seed=1, batch_size=7)
        make_run(store, 40, seed=2, recorded=25, fail=True)
        make_run(store, 120, k=4, seed=3, batch_size=11)
    projections.catch_up(store)  # what was committed after the follower's last batch
    followed = snapshot(store)
    projections.rebuild(store)
    assert snapshot(store) == followed


def test_a_held_projection_stops_the_follower_quietly(store: EventStore) -> None:
    make_run(store, 5, seed=4)
    projections.catch_up_all(store)
    with store.recorder.connection() as conn:
        runner = Runner(store, projections.PROJECTIONS["embeddingcluster"](store), conn)
        assert runner.lock.try_acquire()
        try:
            with projections.alongside(store, poll=0.01):
                make_run(store, 30, seed=5)
        finally:
            runner.lock.release()
    assert projections.catch_up(store)["embeddingcluster"] > 0


def test_a_follower_started_meanwhile_takes_over_and_is_never_refused(
    store: EventStore,
) -> None:
    """A writing command's own follower takes no follower lock: ``catch-up --follow``
    started while it runs is not refused as a second follower; the writer's follower
    stops, and the follower carries on from its checkpoint (the long harness hit this)."""
    make_run(store, 5, seed=6)
    projections.catch_up_all(store)
    stop = threading.Event()
    errors: list[BaseException] = []

    def follower() -> None:
        try:
            projections.follow(store, poll=0.01, stop=stop.is_set)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    with projections.alongside(store, poll=0.01):
        make_run(store, 30, seed=7, batch_size=7)
        thread = threading.Thread(target=follower)
        thread.start()
        make_run(store, 40, seed=8, batch_size=9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not errors:
            if all(s.runner for s in projections.status(store)):
                break
            time.sleep(0.05)
    try:
        assert errors == []
        head = store.max_position()
        while time.monotonic() < deadline and not errors:
            if all(s.checkpoint == head for s in projections.status(store)):
                break
            time.sleep(0.05)
        assert errors == []
        assert all(s.checkpoint == head for s in projections.status(store))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    followed = snapshot(store)
    projections.rebuild(store)
    assert snapshot(store) == followed

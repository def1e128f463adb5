"""``projections.alongside``: the read models follow the log while a run is written; after
the block and the usual catch-up they are exactly what a catch-up after the run gives, and
a follower that cannot run (another runner holds a projection) never fails the block."""

from __future__ import annotations

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

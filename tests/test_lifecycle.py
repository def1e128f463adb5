"""The lifecycle fold (``eventstore.lifecycle``) and the run writer that keeps it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import numpy as np
import pytest

from clusterstore.eventstore import (
    CentroidsComputed,
    EventDecodeError,
    EventStore,
    InputError,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from clusterstore.eventstore.codec import encode, pack_assignments
from clusterstore.eventstore.lifecycle import RunLifecycle, Transition, transition
from clusterstore.eventstore.recorder import StoredEvent
from clusterstore.eventstore.runs import read_progress, replay_run, resume_run, start_run
from tests.test_decoder_robustness import memory_cap
from tests.test_runs_resume_segments import rows

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN = UUID("0190aaaa-0001-7000-8000-00000000000f")


def test_transition_says_what_each_lifecycle_event_does() -> None:
    started = RunStarted(model="m", algorithm="a", n_embeddings=1, dim=1, k=1, started_at=T0)
    assert transition(started) == Transition("running")
    failed = RunFailed(error="boom", last_seq=3, failed_at=T0)
    assert transition(failed) == Transition("failed", "boom", T0)
    assert transition(RunResumed(from_row=1, resumed_at=T0)) == Transition("running")
    done = RunCompleted(count=1, digest="d", finished_at=T0)
    assert transition(done) == Transition("completed", None, T0)
    assert transition(CentroidsComputed(k=1, dim=1, centroids=b"\0" * 4)) is None


def test_the_fold_follows_a_failed_resumed_and_completed_run(store: EventStore) -> None:
    writer = start_run(store, model="m", algorithm="kmeans-l2", n_embeddings=30, dim=2, k=3)
    writer.record_centroids(np.zeros((3, 2)))
    writer.record(*rows(0, 12))
    writer.fail("disk full")

    life = replay_run(store, writer.run_id)
    assert (life.status, life.error, life.rows, life.head) == ("failed", "disk full", 12, 15)
    assert life.finished_at is not None and life.base == 3
    assert life.started == writer.started and life.centroids is not None

    _, w2 = resume_run(store, writer.run_id)
    life = replay_run(store, writer.run_id)
    assert (life.status, life.error, life.finished_at, life.base) == ("running", None, None, 5)
    assert len(life.resumed) == 1

    w2.record(*rows(12, 30))
    done = w2.complete()
    life = replay_run(store, writer.run_id)
    assert (life.status, life.completed, life.rows) == ("completed", done, 30)
    assert life.digest.hexdigest() == done.digest
    assert life.sizes.tolist() == done.cluster_sizes == [10, 10, 10]
    assert life.finished_at == done.finished_at


def test_the_fold_refuses_a_cluster_beyond_k_naming_the_seq() -> None:
    life = RunLifecycle()
    started = RunStarted(model="m", algorithm="a", n_embeddings=2, dim=1, k=2, started_at=T0)
    life.apply(started, 1)
    ids, _, dist = rows(0, 2)
    packed = pack_assignments(ids, np.array([1, 5]), dist)
    page = [
        StoredEvent(RUN, 2 + i, packed.type, packed.version, packed.payload(i)) for i in range(2)
    ]
    with pytest.raises(EventDecodeError) as info:
        life.feed(page)
    assert (info.value.run_id, info.value.seq) == (RUN, 3)
    assert life.rows == 0  # nothing of a refused block is applied


def test_the_writer_keeps_its_own_state(store: EventStore) -> None:
    writer = start_run(
        store, model="m", algorithm="kmeans-l2", n_embeddings=10, dim=2, k=3, batch_size=4
    )
    for name, value in (("head", 9), ("batch_size", 1), ("rows_done", 3), ("finished", True)):
        with pytest.raises(AttributeError):
            setattr(writer, name, value)
    writer.record_centroids(np.zeros((3, 2)))
    writer.record(*rows(0, 6))
    assert (writer.rows_done, writer.head, writer.batch_size) == (6, 8, 4)

    _, replayed = read_progress(store, writer.run_id)
    assert (replayed.rows_done, replayed.head, replayed.has_centroids) == (6, 8, True)
    assert replayed.digest.hexdigest() == writer.digest.hexdigest()
    with pytest.raises(InputError, match="batch size must be at least 1"):
        replayed.resume(batch_size=0)
    event = replayed.resume(batch_size=2)
    assert (event.from_row, replayed.head, replayed.batch_size) == (6, 9, 2)
    assert replayed.seq_of(6) == 10
    replayed.record(*rows(6, 10))
    replayed.complete()
    with pytest.raises(InputError, match="already completed; nothing to resume"):
        replayed.resume()
    assert encode(replayed.started) == encode(writer.started)


def test_an_absurd_k_does_not_make_the_replay_count_that_many_clusters() -> None:
    """A damaged RunStarted declaring k=2^31-1 for 3 embeddings and a label near 5e8: the
    fold used to allocate 4 GB of counters (MemoryError from `runs resume`, found by the
    decoder fuzzing); it refuses the block as damaged instead."""
    life = RunLifecycle()
    k = 2**31 - 1
    life.apply(RunStarted(model="m", algorithm="a", n_embeddings=3, dim=1, k=k, started_at=T0), 1)
    ids, _, dist = rows(0, 1)
    packed = pack_assignments(ids, np.array([481_534_518]), dist)
    page = [StoredEvent(RUN, 2, packed.type, packed.version, packed.data)]
    with memory_cap(), pytest.raises(EventDecodeError) as info:
        life.feed(page)
    assert info.value.reason.startswith(
        "AssignmentRecorded cluster 481534518 is not below the 1048576 clusters a replay "
        f"counts (RunStarted declares k={k} for 3 embeddings)"
    )

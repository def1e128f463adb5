"""The legacy failure, replayed through the run lifecycle (``eventstore.runs``).

The ORM path died with ``UNIQUE constraint failed`` whenever a batch was sent twice, and
only on models with more rows than one batch. Here runs of N = k*B-1, k*B and k*B+1
assignments with batch size B are recorded with a batch sent twice, with a batch that
fails before it is written, with one whose commit succeeds but whose caller sees an error,
and with a failure that ends the run and a resume. Every run must end complete with
exactly N assignments and the digest of a clean run.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import numpy as np
import pytest

from clusterstore.eventstore import (
    AssignmentDigest,
    AssignmentRecorded,
    DatabaseUnavailableError,
    EventStore,
    PackedEvents,
    RunCompleted,
    RunFailed,
    RunResumed,
)
from clusterstore.eventstore.runs import RunWriter, read_progress, resume_run, start_run
from clusterstore.eventstore.store import decode_stored
from tests.contracts.support import Assignments, assignments

B = 5
K = 3
SIZES = sorted({k * B + d for k in (1, 3) for d in (-1, 0, 1)})


def begin(store: EventStore, a: Assignments) -> RunWriter:
    n = len(a.labels)
    return start_run(
        store, model="legacy", algorithm="kmeans-l2", n_embeddings=n, dim=4, k=K, batch_size=B
    )


def check_complete(store: EventStore, run_id: UUID, a: Assignments) -> None:
    """Exactly N assignments in the log, and a RunCompleted with the clean digest."""
    n = len(a.labels)
    stored = list(store.read_raw(run_id))
    assigned = [e for e in stored if e.type == AssignmentRecorded.TYPE]
    assert len(assigned) == n
    digest = AssignmentDigest()
    digest.update(b"".join(e.payload for e in assigned), n)
    assert digest.hexdigest() == a.digest()
    assert b"".join(e.payload for e in assigned) == a.packed().data  # row order kept
    last = decode_stored(stored[-1])
    assert isinstance(last, RunCompleted)
    assert (last.count, last.digest) == (n, a.digest())
    assert last.cluster_sizes == np.bincount(a.labels, minlength=K).tolist()
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    progress, _ = read_progress(store, run_id)
    assert progress.rows_done == n
    assert progress.completed == last


class FailOnce:
    """Wraps ``store.append``: the ``at``-th assignment batch raises once, either before
    anything is written or after the append committed (the caller never hears of it)."""

    def __init__(self, store: EventStore, at: int, *, after_commit: bool):
        self.real = store.append
        self.at = at
        self.after_commit = after_commit
        self.calls = 0
        self.fired = False

    def __call__(self, run_id: UUID, events: Any, *, expected_seq: int | None = None) -> Any:
        if isinstance(events, PackedEvents) and not self.fired:
            self.calls += 1
            if self.calls == self.at:
                self.fired = True
                if self.after_commit:
                    self.real(run_id, events, expected_seq=expected_seq)
                raise DatabaseUnavailableError("injected: the connection was lost")
        return self.real(run_id, events, expected_seq=expected_seq)


def failing_batches(n: int) -> list[int]:
    batches = -(-n // B)
    return sorted({1, (batches + 1) // 2, batches})


@pytest.mark.parametrize("n", SIZES)
def test_clean_run(store: EventStore, n: int) -> None:
    a = assignments(n, seed=n, k=K)
    with begin(store, a) as run:
        assert run.record(*a) == n
    check_complete(store, run.run_id, a)


@pytest.mark.parametrize("n", SIZES)
def test_a_batch_sent_twice(store: EventStore, n: int) -> None:
    a = assignments(n, seed=n, k=K)
    # each batch once, then one of them again
    with begin(store, a) as run:
        for lo in range(0, n, B):
            assert run.record(*(x[lo : lo + B] for x in a)) == min(B, n - lo)
            assert run.record(*(x[lo : lo + B] for x in a), start_row=lo) == 0
    check_complete(store, run.run_id, a)
    # the list that is never cleared: every flush re-sends all rows so far
    with begin(store, a) as run:
        for hi in range(B, n + B, B):
            assert run.record(*(x[:hi] for x in a), start_row=0) == min(B, n - hi + B)
        assert run.record(*a, start_row=0) == 0
    check_complete(store, run.run_id, a)


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-write", "after-commit"])
@pytest.mark.parametrize("n", SIZES)
def test_a_failed_batch_is_retried(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, n: int, after_commit: bool
) -> None:
    a = assignments(n, seed=n, k=K)
    for at in failing_batches(n):
        monkeypatch.setattr(store, "append", FailOnce(store, at, after_commit=after_commit))
        with begin(store, a) as run:
            with pytest.raises(DatabaseUnavailableError):
                run.record(*a)
            run.record(*a, start_row=0)  # the retry re-sends everything
        monkeypatch.undo()
        check_complete(store, run.run_id, a)


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-write", "after-commit"])
@pytest.mark.parametrize("n", SIZES)
def test_a_failed_run_is_resumed(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, n: int, after_commit: bool
) -> None:
    a = assignments(n, seed=n, k=K)
    at = failing_batches(n)[1] if len(failing_batches(n)) > 1 else 1
    monkeypatch.setattr(store, "append", FailOnce(store, at, after_commit=after_commit))
    with pytest.raises(DatabaseUnavailableError), begin(store, a) as run:
        run.record(*a)
    monkeypatch.undo()
    run_id = run.run_id
    assert isinstance(decode_stored(list(store.read_raw(run_id))[-1]), RunFailed)
    progress, writer = resume_run(store, run_id)
    assert progress.failed is not None
    with writer:
        writer.record(*(x[progress.rows_done :] for x in a))
    check_complete(store, run_id, a)
    kinds = [type(decode_stored(e)).__name__ for e in store.read_raw(run_id)]
    assert kinds.count(RunFailed.NAME) == kinds.count(RunResumed.NAME) == 1


class FailCompletionAfterCommit:
    """Wraps ``store.append``: the RunCompleted commits, then the caller gets an error."""

    def __init__(self, store: EventStore):
        self.real = store.append
        self.fired = False

    def __call__(self, run_id: UUID, events: Any, *, expected_seq: int | None = None) -> Any:
        result = self.real(run_id, events, expected_seq=expected_seq)
        if not self.fired and isinstance(events, list) and isinstance(events[0], RunCompleted):
            self.fired = True
            raise DatabaseUnavailableError("injected: the connection was lost")
        return result


def test_a_completion_whose_commit_was_not_acknowledged_is_retried(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = assignments(2 * B + 1, seed=1, k=K)
    run = begin(store, a)
    run.record(*a)
    monkeypatch.setattr(store, "append", FailCompletionAfterCommit(store))
    with pytest.raises(DatabaseUnavailableError):
        run.complete()
    first = run.complete()  # the retry re-sends the same RunCompleted: a no-op
    monkeypatch.undo()
    check_complete(store, run.run_id, a)
    assert decode_stored(list(store.read_raw(run.run_id))[-1]) == first

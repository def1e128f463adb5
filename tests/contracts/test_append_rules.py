"""The append rules, case by case: expected sequence, idempotent and conflicting re-sends,
empty batches. Every refusal is checked to leave the whole log unchanged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from clusterstore.eventstore import (
    ConcurrencyError,
    Event,
    EventConflictError,
    EventStore,
    PackedEvents,
    RunFailed,
    pack_assignments,
)
from clusterstore.eventstore.codec import decode, encode
from clusterstore.eventstore.events import AssignmentRecorded
from tests.contracts.support import assignments, feed_keys, snapshot, started


def failed(n: int) -> RunFailed:
    return RunFailed(error=f"e{n}", last_seq=n, failed_at=datetime(2026, 1, 2, tzinfo=UTC))


Batch = PackedEvents | list[Event]


def build_run(store: EventStore) -> tuple[uuid.UUID, list[tuple[int, Batch]]]:
    """A run of several commits of mixed kinds; returns (run, [(expected_seq, batch)])."""
    run = uuid.uuid4()
    a = assignments(40, seed=1)
    plan: list[Batch] = [
        [started(40)],
        a.packed(0, 7),
        a.packed(7, 8),
        [failed(1), failed(2)],
        a.packed(8, 30),
        [AssignmentRecorded(embedding_id=uuid.uuid4(), cluster=1, distance=0.5)],
        a.packed(30, 40),
    ]
    sent: list[tuple[int, Batch]] = []
    head = 0
    for batch in plan:
        result = store.append(run, batch, expected_seq=head)
        sent.append((head, batch))
        head = result.head
    return run, sent


def test_concurrency_error_names_run_expected_and_actual(store: EventStore) -> None:
    run = uuid.uuid4()
    store.append(run, [started()], expected_seq=0)
    before = snapshot(store)
    for expected in (2, 5, -1):
        with pytest.raises(ConcurrencyError) as info:
            store.append(run, assignments(3).packed(), expected_seq=expected)
        assert type(info.value) is ConcurrencyError
        assert (info.value.run_id, info.value.expected, info.value.actual) == (run, expected, 1)
        assert str(info.value) == (
            f"run {run}: expected the head at seq {expected}, but it is at seq 1; "
            "read the run's head and retry from there"
        )
    # a run that does not exist yet has its head at 0
    other = uuid.uuid4()
    with pytest.raises(ConcurrencyError) as info:
        store.append(other, [started()], expected_seq=1)
    assert (info.value.run_id, info.value.expected, info.value.actual) == (other, 1, 0)
    assert snapshot(store) == before


def test_expected_seq_none_appends_at_the_head(store: EventStore) -> None:
    run = uuid.uuid4()
    store.append(run, [started()])
    result = store.append(run, assignments(5).packed())
    assert (result.head, result.appended, result.first_seq) == (6, 5, 2)


def test_idempotent_resend_of_any_batch(store: EventStore) -> None:
    run, sent = build_run(store)
    head = store.head(run)
    before = snapshot(store)
    for expected, batch in sent:
        # the same batch, and the same events in the other form (packed <-> events)
        other = [decode(*r) for r in batch.raw()] if isinstance(batch, PackedEvents) else batch
        for again in (batch, other):
            result = store.append(run, again, expected_seq=expected)
            assert (result.head, result.appended, result.first_seq, result.position) == (
                head,
                0,
                expected + 1,
                None,
            )
    # a re-send that spans several commits, and the whole run at once
    raws = [encode(decode(e.type, e.version, e.payload)) for e in store.read_raw(run)]
    for lo, hi in [(3, 20), (0, head), (head - 1, head)]:
        result = store.append(run, [decode(*r) for r in raws[lo:hi]], expected_seq=lo)
        assert (result.head, result.appended) == (head, 0)
    assert snapshot(store) == before


def test_resend_that_runs_past_the_head_appends_only_the_tail(store: EventStore) -> None:
    run = uuid.uuid4()
    other = uuid.uuid4()
    a = assignments(30, seed=2)
    store.append(run, [started(30)], expected_seq=0)
    store.append(run, a.packed(0, 10), expected_seq=1)  # seqs 2..11
    store.append(other, [started()], expected_seq=0)
    pos = store.max_position()
    # the "list not cleared between flushes" re-send: rows 0..24, of which 0..9 are stored
    result = store.append(run, a.packed(0, 25), expected_seq=1)
    assert (result.head, result.appended, result.first_seq, result.position) == (26, 15, 2, pos + 1)
    stored = list(store.read_raw(run))
    assert b"".join(e.payload for e in stored[1:]) == a.packed(0, 25).data
    assert feed_keys(store, after=pos) == [(pos + 1 + k, run, 12 + k) for k in range(15)]
    # the same with a start in the middle of an earlier commit
    result = store.append(run, a.packed(20, 30), expected_seq=21)
    assert (result.head, result.appended, result.position) == (31, 5, pos + 16)


def test_conflicting_resend_is_refused_and_changes_nothing(store: EventStore) -> None:
    run, sent = build_run(store)
    head = store.head(run)
    before = snapshot(store)
    for expected, batch in sent:
        if isinstance(batch, PackedEvents):
            flipped = bytearray(batch.data)
            flipped[-1] ^= 0xFF  # the last event's distance differs
            bad: Batch = PackedEvents(batch.type, batch.version, batch.width, bytes(flipped))
            bad_seq = expected + batch.count
        else:
            bad = [*batch[:-1], failed(99)]
            bad_seq = expected + len(batch)
        with pytest.raises(EventConflictError) as info:
            store.append(run, bad, expected_seq=expected)
        assert (info.value.run_id, info.value.seq, info.value.expected, info.value.actual) == (
            run,
            bad_seq,
            expected,
            head,
        )
        assert str(info.value) == (
            f"run {run}: seq {bad_seq} is already stored with different content "
            f"(expected head {expected}, actual head {head}); the log is append-only, "
            "so a conflicting re-send is refused"
        )
    # a conflict in the overlap also refuses the tail that would have been new
    tail = pack_assignments(np.array([uuid.uuid4()] * 3), [0, 1, 2], [0.0, 0.0, 0.0])
    last_expected, last = sent[-1]
    assert isinstance(last, PackedEvents)
    changed = PackedEvents(last.type, last.version, last.width, last.data[29:] + last.data[:29])
    with pytest.raises(EventConflictError):
        store.append(
            run,
            PackedEvents(last.type, last.version, last.width, changed.data + tail.data),
            expected_seq=last_expected,
        )
    # the same (run, seq) as a different event type is a conflict too
    with pytest.raises(EventConflictError):
        store.append(run, [failed(0)], expected_seq=0)
    assert snapshot(store) == before


def test_empty_batch(store: EventStore) -> None:
    run = uuid.uuid4()
    empty = pack_assignments([], [], [])
    before = snapshot(store)
    batch: Batch
    for batch in ([], empty):
        result = store.append(run, batch, expected_seq=0)
        assert (result.head, result.appended, result.first_seq, result.position) == (0, 0, 1, None)
        with pytest.raises(ConcurrencyError) as info:
            store.append(run, batch, expected_seq=3)
        assert (info.value.expected, info.value.actual) == (3, 0)
    assert snapshot(store) == before  # not even a cs_runs row
    store.append(run, [started()], expected_seq=0)
    store.append(run, assignments(4).packed(), expected_seq=1)
    before = snapshot(store)
    for batch in ([], empty):
        assert store.append(run, batch).head == 5
        assert store.append(run, batch, expected_seq=5).appended == 0
        # an empty batch re-sent at an older expected seq is a (trivially identical) re-send
        result = store.append(run, batch, expected_seq=2)
        assert (result.head, result.appended, result.first_seq) == (5, 0, 3)
        with pytest.raises(ConcurrencyError):
            store.append(run, batch, expected_seq=6)
    assert snapshot(store) == before

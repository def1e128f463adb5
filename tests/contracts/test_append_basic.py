"""Basic append/read contract, run against every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from clusterstore.eventstore import (
    ConcurrencyError,
    EventConflictError,
    EventStore,
    RunStarted,
    pack_assignments,
)


def started(n: int = 10) -> RunStarted:
    return RunStarted(
        model="m",
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=4,
        k=2,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def assignments(n: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return pack_assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8), rng.integers(0, 2, n), rng.random(n)
    )


def test_append_and_read_back(store: EventStore) -> None:
    run = uuid.uuid4()
    assert store.append(run, [started()], expected_seq=0).head == 1
    batch = assignments(25)
    result = store.append(run, batch, expected_seq=1)
    assert (result.head, result.appended, result.position) == (26, 25, 2)
    raw = list(store.read_raw(run))
    assert [e.seq for e in raw] == list(range(1, 27))
    assert b"".join(e.payload for e in raw[1:]) == batch.data
    assert store.head(run) == 26
    assert store.max_position() == 26


def test_identical_resend_is_a_noop_and_different_bytes_conflict(store: EventStore) -> None:
    run = uuid.uuid4()
    store.append(run, [started()], expected_seq=0)
    batch = assignments(10)
    store.append(run, batch, expected_seq=1)
    again = store.append(run, batch, expected_seq=1)
    assert (again.appended, again.head) == (0, 11)
    with pytest.raises(EventConflictError) as info:
        store.append(run, assignments(10, seed=1), expected_seq=1)
    assert info.value.seq == 2
    assert store.head(run) == 11


def test_gap_is_a_concurrency_error(store: EventStore) -> None:
    run = uuid.uuid4()
    store.append(run, [started()], expected_seq=0)
    with pytest.raises(ConcurrencyError) as info:
        store.append(run, assignments(3), expected_seq=5)
    assert (info.value.expected, info.value.actual) == (5, 1)
    assert str(run) in str(info.value)

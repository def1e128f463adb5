"""The packed fast paths cut a batch into parts (SQLite: the TEMP table of row numbers,
PostgreSQL: COPY chunks); part sizes are shrunk here so small batches cross them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from clusterstore.eventstore import ConcurrencyError, EventStore, PackedEvents, pack_assignments
from clusterstore.eventstore import postgres as pg_backend
from clusterstore.eventstore import sqlite as sqlite_backend


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "ROW_NUMBERS", 7)
    monkeypatch.setattr(pg_backend, "COPY_CHUNK_ROWS", 5)


def _batch(n: int, seed: int) -> PackedEvents:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return pack_assignments(ids, rng.integers(0, 9, n), rng.random(n, dtype=np.float32))


def test_batches_across_part_boundaries_read_back_exactly(store: EventStore) -> None:
    run = uuid.uuid4()
    written = b""
    head = 0
    for i, size in enumerate([1, 6, 7, 8, 23, 3, 14, 15]):
        batch = _batch(size, seed=i)
        with pytest.raises(ConcurrencyError):  # a refused append leaves nothing behind
            store.append(run, batch, expected_seq=head + 1)
        head = store.append(run, batch, expected_seq=head).head
        written += batch.data
    stored = list(store.read_raw(run))
    assert [e.seq for e in stored] == list(range(1, head + 1))
    assert b"".join(e.payload for e in stored) == written
    assert store.max_position() == head == 77

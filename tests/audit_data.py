"""Test data for the audit tests: runs built with the real lifecycle (no faiss), a fixed
clock, and tampering that goes around the store (dropping the immutability triggers)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import delete, insert, update

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import RunWriter, start_run
from clusterstore.eventstore.schema import events

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Ids that share their first 8 hex digits, like UUIDv7s made in the same millisecond.
RUN_A = UUID("0190aaaa-0001-7000-8000-000000000001")
RUN_B = UUID("0190aaaa-0002-7000-8000-000000000002")
RUN_C = UUID("0190aaaa-0003-7000-8000-000000000003")
RUN_D = UUID("0190aaaa-0004-7000-8000-000000000004")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``eventstore.runs._now`` returns T0, T0 + 1.5 s, T0 + 3 s, ..."""
    ticks = itertools.count()
    monkeypatch.setattr(
        "clusterstore.eventstore.runs._now", lambda: T0 + timedelta(seconds=1.5 * next(ticks))
    )
    yield


def embedding_ids(n: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16), dtype=np.uint8)


def labels_for(n: int, k: int, seed: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, k, n)


def distances_for(n: int, seed: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed + 1000).random(n).astype(np.float32)


def make_run(
    store: EventStore,
    run_id: UUID,
    *,
    n: int = 50,
    k: int = 4,
    model: str = "mpnet",
    seed: int = 0,
    ids: npt.NDArray[Any] | None = None,
    labels: npt.NDArray[Any] | None = None,
    distances: npt.NDArray[Any] | None = None,
    end: str = "complete",  # complete | fail | none
    rows: int | None = None,  # how many rows to record (default: all)
    centroids: bool = True,
    batch_size: int = 100_000,
    digest_version: int = 2,
) -> RunWriter:
    """A run with RunStarted, CentroidsComputed (optional), ``rows`` assignments and an end."""
    ids = embedding_ids(n) if ids is None else ids
    labels = labels_for(n, k, seed) if labels is None else labels
    distances = distances_for(n, seed) if distances is None else distances
    writer = start_run(
        store,
        model=model,
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=2,
        k=k,
        seed=seed,
        params={"niter": 20},
        input_digest="ab" * 32,
        run_id=run_id,
        batch_size=batch_size,
        digest_version=digest_version,
    )
    if centroids:
        writer.record_centroids(
            np.arange(2 * k, dtype=np.float32).reshape(k, 2) / 4,
            objective=12.5,
            iterations=20,
            train_seconds=0.25,
        )
    upto = n if rows is None else rows
    if upto:
        writer.record(ids[:upto], labels[:upto], distances[:upto])
    if end == "complete":
        writer.complete()
    elif end == "fail":
        writer.fail(ValueError("out of memory"))
    return writer


# ---------------------------------------------------------------- going around the store


def drop_triggers(store: EventStore) -> None:
    """What an attacker (or a careless admin) does first: remove the append-only guard."""
    if store.backend == "sqlite":
        ddl = ["DROP TRIGGER cs_events_no_update", "DROP TRIGGER cs_events_no_delete"]
    else:
        ddl = ["DROP TRIGGER cs_events_no_update_delete ON cs_events"]
    with store.recorder.engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)


def stored_payload(store: EventStore, run_id: UUID, seq: int) -> bytes:
    (ev,) = list(store.read_raw(run_id, after=seq - 1, limit=1))
    assert ev.seq == seq
    return ev.payload


def set_payload(store: EventStore, run_id: UUID, seq: int, payload: bytes) -> None:
    e = events
    with store.recorder.engine.begin() as conn:
        conn.execute(update(e).where(e.c.run_id == run_id, e.c.seq == seq).values(payload=payload))


def flip_byte(store: EventStore, run_id: UUID, seq: int, index: int, value: int) -> None:
    payload = bytearray(stored_payload(store, run_id, seq))
    payload[index] = value
    set_payload(store, run_id, seq, bytes(payload))


def delete_row(store: EventStore, run_id: UUID, seq: int) -> None:
    e = events
    with store.recorder.engine.begin() as conn:
        conn.execute(delete(e).where(e.c.run_id == run_id, e.c.seq == seq))


def insert_row(
    store: EventStore, run_id: UUID, seq: int, payload: bytes, type_code: int = 3
) -> None:
    with store.recorder.engine.begin() as conn:
        conn.execute(
            insert(events).values(
                run_id=run_id, seq=seq, type=type_code, version=1, payload=payload
            )
        )

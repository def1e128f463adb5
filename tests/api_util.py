"""Helpers for the Python API tests: a fresh store through the front door, synthetic data,
and a snapshot of every table (to prove a call wrote nothing)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
from sqlalchemy import inspect, text

import clusterstore
from clusterstore.eventstore import EventStore


def blobs(n: int, d: int = 8, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 6 * rng.standard_normal((k, d))
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def uuids(n: int, seed: int = 0) -> list[uuid.UUID]:
    rng = np.random.default_rng(seed)
    return [uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(n)]


def every_table(store: EventStore | clusterstore.Store) -> dict[str, list[str]]:
    """Every row of every table of the database (the log, the read models, checkpoints),
    as sorted text: equal before and after a call that writes nothing."""
    es = store.event_store if isinstance(store, clusterstore.Store) else store
    out: dict[str, list[str]] = {}
    with es.recorder.transaction() as conn:
        for name in sorted(inspect(conn).get_table_names()):
            rows = conn.execute(text(f'SELECT * FROM "{name}"')).all()
            out[name] = sorted(repr(tuple(_plain(v) for v in row)) for row in rows)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def view_rows(store: clusterstore.Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.event_store.recorder.transaction() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def hex_id(run: clusterstore.Run | uuid.UUID, backend: str) -> Any:
    """A run id as the views compare it (CHAR(32) hex on SQLite, uuid on PostgreSQL)."""
    run_id = run.run_id if isinstance(run, clusterstore.Run) else run
    return run_id.hex if backend == "sqlite" else run_id

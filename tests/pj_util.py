"""Helpers shared by the projection tests: small runs, log truth, read-model snapshots."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import inspect, text

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import RunProgress, read_progress, start_run
from clusterstore.projections.base import current_generation
from clusterstore.projections.schema import cr_tables, ec_tables


def rows(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.frombuffer(rng.bytes(16 * n), dtype="V16")
    return ids, rng.integers(0, k, n), rng.random(n, dtype=np.float32) * 4


def make_run(
    store: EventStore,
    n: int,
    *,
    k: int = 3,
    seed: int = 0,
    recorded: int | None = None,
    fail: bool = False,
    batch_size: int = 7,
    centroids: bool = True,
    **extra: Any,
) -> UUID:
    """A run of ``n`` embeddings: all rows recorded and completed by default; with
    ``recorded`` only that many rows (left running, or failed with ``fail``)."""
    ids, labels, dist = rows(n, k, seed)
    writer = start_run(
        store,
        model="m",
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=2,
        k=k,
        seed=seed,
        batch_size=batch_size,
        **extra,
    )
    if centroids:
        writer.record_centroids(np.arange(k * 2, dtype=np.float32).reshape(k, 2) + seed)
    upto = n if recorded is None else recorded
    writer.record(ids[:upto], labels[:upto], dist[:upto])
    if recorded is None:
        writer.complete()
    elif fail:
        writer.fail("boom")
    return writer.run_id


def truth(store: EventStore) -> dict[UUID, RunProgress]:
    return {r.run_id: read_progress(store, r.run_id)[0] for r in store.runs()}


def query(store: EventStore, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.recorder.transaction() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def _same_nan(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def snapshot(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Everything readers can see plus the current generations' physical tables (NaN
    distances made comparable)."""
    out: dict[str, list[tuple[Any, ...]]] = {
        "embeddingcluster": query(store, "SELECT * FROM embeddingcluster ORDER BY run_id, seq"),
        "clustersize": query(store, "SELECT * FROM clustersize ORDER BY run_id, cluster"),
        "clusteringresult": query(store, "SELECT * FROM clusteringresult ORDER BY run_id"),
    }
    with store.recorder.transaction() as conn:
        ec = current_generation(conn, "embeddingcluster")
        cr = current_generation(conn, "clusteringresult")
    assert ec is not None and cr is not None
    for name, table in [
        *zip(("runs", "assignments", "clusters"), ec_tables(ec), strict=True),
        ("results", cr_tables(cr).results),
    ]:
        keys = ", ".join(c.name for c in table.primary_key.columns)
        out[name] = query(store, f"SELECT * FROM {table.name} ORDER BY {keys}")
    return {k: [tuple(map(_same_nan, row)) for row in v] for k, v in out.items()}


def physical_tables(store: EventStore) -> set[str]:
    """The read models' tables (a store partitioned by run: without the partitions)."""
    with store.recorder.transaction() as conn:
        names = inspect(conn).get_table_names()
    return {t for t in names if t.startswith("pj_") and not re.fullmatch(r".+_g\d+_p\d+", t)}


def new_id() -> UUID:
    return uuid.uuid4()

"""Helpers and Hypothesis strategies shared by the log's contract tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple
from uuid import UUID

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from sqlalchemy import select

from clusterstore.eventstore import (
    AssignmentDigest,
    AssignmentRecorded,
    CentroidsComputed,
    Event,
    EventStore,
    PackedEvents,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
    pack_assignments,
    schema,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SMALL_INT = st.integers(min_value=0, max_value=2**31 - 1)
FLOATS = st.floats(allow_nan=False)
TIMEZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=TIMEZONES
)
JSON_SCALARS = st.none() | st.booleans() | INT64 | FLOATS | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
CLUSTERS = st.integers(min_value=0, max_value=2**32 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)


def run_started() -> st.SearchStrategy[RunStarted]:
    return st.builds(
        RunStarted,
        model=st.text(min_size=1, max_size=30),
        algorithm=st.text(max_size=20),
        params=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4),
        n_embeddings=SMALL_INT,
        dim=SMALL_INT,
        k=SMALL_INT,
        seed=st.none() | INT64,
        input_digest=st.text(max_size=64),
        started_at=DATETIMES,
        input_path=st.none() | st.text(max_size=40),
        ids_digest=st.none() | st.text(max_size=64),
        train_size=st.none() | SMALL_INT,
        faiss_version=st.none() | st.text(max_size=10),
        threads=st.none() | SMALL_INT,
        imported_from=st.none() | st.text(max_size=20),
        legacy_id=st.none() | st.uuids(),
    )


def centroids_computed() -> st.SearchStrategy[CentroidsComputed]:
    return st.builds(
        CentroidsComputed,
        k=SMALL_INT,
        dim=SMALL_INT,
        centroids=st.binary(max_size=256),
        objective=st.none() | FLOATS,
        iterations=st.none() | SMALL_INT,
        train_seconds=st.none() | FLOATS,
    )


def assignment_recorded() -> st.SearchStrategy[AssignmentRecorded]:
    return st.builds(
        AssignmentRecorded,
        embedding_id=st.uuids(),
        cluster=st.just(-1) | CLUSTERS,  # -1: noise
        distance=FLOAT32,
    )


def run_completed() -> st.SearchStrategy[RunCompleted]:
    return st.builds(
        RunCompleted,
        count=SMALL_INT,
        digest=st.text(max_size=64),
        finished_at=DATETIMES,
        cluster_sizes=st.lists(SMALL_INT, max_size=20),
        n_noise=SMALL_INT,
    )


def run_failed() -> st.SearchStrategy[RunFailed]:
    return st.builds(
        RunFailed,
        error=st.text(max_size=200),
        last_seq=SMALL_INT,
        failed_at=DATETIMES,
        error_type=st.text(max_size=30),
    )


def run_resumed() -> st.SearchStrategy[RunResumed]:
    return st.builds(
        RunResumed, from_row=SMALL_INT, resumed_at=DATETIMES, input_digest=st.text(max_size=64)
    )


STRATEGIES: dict[type[Event], st.SearchStrategy[Any]] = {
    RunStarted: run_started(),
    CentroidsComputed: centroids_computed(),
    AssignmentRecorded: assignment_recorded(),
    RunCompleted: run_completed(),
    RunFailed: run_failed(),
    RunResumed: run_resumed(),
}
ANY_EVENT: st.SearchStrategy[Event] = st.one_of(*STRATEGIES.values())


# ---------------------------------------------------------------- fixed inputs


def started(n: int = 10, k: int = 3) -> RunStarted:
    return RunStarted(
        model="m",
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=4,
        k=k,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class Assignments(NamedTuple):
    ids: npt.NDArray[np.uint8]  # (n, 16)
    labels: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float32]

    def packed(self, lo: int = 0, hi: int | None = None) -> PackedEvents:
        return pack_assignments(self.ids[lo:hi], self.labels[lo:hi], self.distances[lo:hi])

    def digest(self) -> str:
        d = AssignmentDigest()
        p = self.packed()
        d.update(p.data, p.count)
        return d.hexdigest()


def assignments(n: int, seed: int = 0, k: int = 3) -> Assignments:
    rng = np.random.default_rng(seed)
    return Assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8),
        rng.integers(0, k, n),
        rng.random(n, dtype=np.float32),
    )


# ---------------------------------------------------------------- the whole log, raw


class LogSnapshot(NamedTuple):
    events: list[tuple[Any, ...]]
    commits: list[tuple[Any, ...]]
    runs: list[tuple[Any, ...]]


def snapshot(store: EventStore) -> LogSnapshot:
    """Every row of the three log tables, in key order: compare before/after a refusal."""
    e, c, r = schema.events, schema.commits, schema.runs
    with store.recorder.transaction() as conn:
        events = conn.execute(select(e).order_by(e.c.run_id, e.c.seq)).all()
        commits = conn.execute(select(c).order_by(c.c.position)).all()
        runs = conn.execute(select(r).order_by(r.c.run_id)).all()
    return LogSnapshot(
        [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in events],
        [tuple(row) for row in commits],
        [tuple(row) for row in runs],
    )


def feed_keys(store: EventStore, after: int = 0) -> list[tuple[int, UUID, int]]:
    """(position, run, seq) of the global feed after ``after``."""
    return [(ev.position or 0, ev.run_id, ev.seq) for ev in store.feed(after=after)]

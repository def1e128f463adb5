"""Property: for random appends across runs (started, recorded in batches, failed, resumed,
completed), with catch-up at random points and random batch sizes, the read models equal a
full rebuild, and both equal what the log says."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterstore import projections
from clusterstore.eventstore import EventStore, EventStoreError
from clusterstore.eventstore.runs import RunWriter, resume_run, start_run
from tests.conftest import drop_pg_schema, make_pg_schema_url
from tests.pj_util import query, rows, snapshot, truth

N = 12  # embeddings per run
K = 3

op = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 3)),
    st.tuples(st.just("record"), st.integers(0, 3), st.integers(1, N)),
    st.tuples(st.just("complete"), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.integers(0, 3)),
    st.tuples(st.just("resume"), st.integers(0, 3)),
    st.tuples(st.just("catch_up"), st.integers(1, 40)),
)


@contextmanager
def fresh_store(backend: str, tmp_path: Path) -> Iterator[EventStore]:
    if backend == "sqlite":
        store = EventStore.open(tmp_path / f"{uuid.uuid4().hex}.db")
        try:
            yield store
        finally:
            store.close()
        return
    url, name = make_pg_schema_url()
    store = EventStore.open(url)
    try:
        yield store
    finally:
        store.close()
        drop_pg_schema(name)


class Scenario:
    """Applies generated operations to runs, skipping the ones that make no sense."""

    def __init__(self, store: EventStore):
        self.store = store
        self.writers: dict[int, RunWriter] = {}
        self.failed: set[int] = set()

    def run(self, ops: list[tuple[Any, ...]]) -> None:
        for name, *args in ops:
            getattr(self, name)(*args)

    def start(self, i: int) -> None:
        if i not in self.writers:
            self.writers[i] = start_run(
                self.store,
                model=f"m{i}",
                algorithm="kmeans-l2",
                n_embeddings=N,
                dim=2,
                k=K,
                seed=i,
                batch_size=5,
            )
            if i % 2:
                self.writers[i].record_centroids(np.ones((K, 2), dtype=np.float32) * i)

    def record(self, i: int, count: int) -> None:
        w = self.writers.get(i)
        if w is None or w.finished or i in self.failed:
            return
        ids, labels, dist = rows(N, K, seed=100 + i)
        if i >= 2:  # runs 2 and 3 have noise (-1), as HDBSCAN's outliers
            labels[(np.arange(N) + i) % 5 == 0] = -1
        lo = w.rows_done
        hi = min(N, lo + count)
        w.record(ids[lo:hi], labels[lo:hi], dist[lo:hi])

    def complete(self, i: int) -> None:
        w = self.writers.get(i)
        if w is not None and not w.finished and i not in self.failed and w.rows_done == N:
            w.complete()

    def fail(self, i: int) -> None:
        w = self.writers.get(i)
        if w is not None and not w.finished and i not in self.failed:
            w.fail("injected")
            self.failed.add(i)

    def resume(self, i: int) -> None:
        if i in self.failed:
            _, writer = resume_run(self.store, self.writers[i].run_id, batch_size=4)
            self.writers[i] = writer
            self.failed.discard(i)

    def catch_up(self, batch: int) -> None:
        projections.catch_up(self.store, batch_events=batch)


def check_against_log(store: EventStore) -> None:
    statuses = {
        uuid.UUID(str(r[0])): (r[1], r[2])
        for r in query(store, "SELECT run_id, status, n_assignments FROM clusteringresult")
    }
    noise = dict(query(store, "SELECT run_id, n_noise FROM clusteringresult"))
    sizes: dict[uuid.UUID, list[int]] = {}
    for run, size in query(store, "SELECT run_id, size FROM clustersize ORDER BY run_id, cluster"):
        sizes.setdefault(uuid.UUID(str(run)), []).append(size)
    for run_id, progress in truth(store).items():
        done = progress.completed
        got = projections.read_model_digest(store, run_id)
        if done is not None:
            assert got == (done.count, done.digest)
            assert statuses[run_id] == ("completed", progress.rows_done)
            assert noise[run_id if store.backend == "postgres" else run_id.hex] == done.n_noise
            assert sizes[run_id] == done.cluster_sizes  # noise is in no cluster
        else:
            assert got is None
            state = "failed" if progress.failed is not None else "running"
            assert statuses[run_id] == (state, progress.rows_done)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=1, max_size=40), final_batch=st.integers(1, 50))
def test_incremental_catch_up_equals_a_full_rebuild(
    backend: str, tmp_path: Path, ops: list[tuple[Any, ...]], final_batch: int
) -> None:
    with fresh_store(backend, tmp_path) as store:
        scenario = Scenario(store)
        try:
            scenario.run(ops)
        except EventStoreError as e:  # pragma: no cover - would be a bug in the scenario
            raise AssertionError(f"scenario failed: {e}") from e
        projections.catch_up(store, batch_events=final_batch)
        incremental = snapshot(store)
        check_against_log(store)
        projections.rebuild(store, batch_events=final_batch + 3)
        assert snapshot(store) == incremental
        check_against_log(store)

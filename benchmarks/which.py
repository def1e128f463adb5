"""Latency of ``which`` (one embedding across every completed run) in a large store.

    python -m clusterstore.benchmarks.which                       # SQLite, 10M assignments
    python -m clusterstore.benchmarks.which --events 2000000 --backend postgres

The store: ``replay.build_log`` (completed runs of random ids, k = 100), projected with
``projections.catch_up_all``; then the lookup index is switched on (its build time is
reported) and ``projections.which`` is timed for ``--lookups`` ids drawn from the log
(each a fresh call: SQL, rows, objects), median and 95th percentile; a few lookups without
the index (a scan) are timed for contrast. The target is under 50 ms at 10M assignments.

The legacy primary key is timed the same way: plain SQL ``SELECT * FROM embeddingcluster
WHERE id = :id`` (one transaction per lookup, rows fetched) for the ids of the same rows
(``projections.assignment_id(run, seq)``, as the view shows them), with the index and,
for contrast, a few without. Switching the option on rebuilds the read model with the ids
stored (``index_build_s`` is that replay plus the index builds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from uuid import UUID

import numpy as np
from sqlalchemy import text

from clusterstore import projections
from clusterstore.benchmarks.append import fresh_database
from clusterstore.benchmarks.replay import build_log
from clusterstore.eventstore import AssignmentRecorded, EventStore

EVENTS = 10_000_000


def sample_ids(store: EventStore, count: int, seed: int = 1) -> list[UUID]:
    """``count`` embedding ids read from random seqs of the store's runs."""
    return [eid for eid, _ in sample_rows(store, count, seed)]


def sample_rows(store: EventStore, count: int, seed: int = 1) -> list[tuple[UUID, UUID]]:
    """``count`` (embedding id, ``embeddingcluster.id``) pairs of random seqs of the
    store's runs."""
    rng = np.random.default_rng(seed)
    heads = store.runs()
    out: list[tuple[UUID, UUID]] = []
    while len(out) < count:
        h = heads[int(rng.integers(0, len(heads)))]
        seq = int(rng.integers(2, h.head))
        for stored, event in store.read(h.run_id, after=seq - 1, limit=1):
            if isinstance(event, AssignmentRecorded):
                out.append((event.embedding_id, projections.assignment_id(h.run_id, stored)))
    return out


_BY_ID = "SELECT * FROM embeddingcluster WHERE id = :id"


def by_id(store: EventStore, row_id: UUID) -> tuple[float, int]:
    """Seconds and row count of one plain-SQL lookup by the legacy primary key."""
    value: object = row_id.hex if store.backend == "sqlite" else row_id  # as the view shows it
    t0 = time.perf_counter()
    with store.transaction() as conn:
        n = len(conn.execute(text(_BY_ID), {"id": value}).all())
    return time.perf_counter() - t0, n


def measure(db: str, events: int, lookups: int, scans: int) -> dict[str, float]:
    t0 = time.perf_counter()
    build_log(db, events)
    built = time.perf_counter() - t0
    with EventStore.open(db) as store:
        t0 = time.perf_counter()
        projections.catch_up_all(store)
        projected = time.perf_counter() - t0
        rows = sample_rows(store, lookups + scans)
        ids = [eid for eid, _ in rows]
        no_index = []
        for eid in ids[:scans]:
            t0 = time.perf_counter()
            found = projections.which(store, eid)
            no_index.append(time.perf_counter() - t0)
            assert len(found.placements) == 1 and not found.indexed
        id_scans = []
        for _, row_id in rows[:scans]:
            seconds, n = by_id(store, row_id)
            id_scans.append(seconds)
            assert n == 1
        t0 = time.perf_counter()
        projections.set_lookup_index(store, True)
        index_s = time.perf_counter() - t0
        store.close()  # a fresh pool (the engine reconnects): new connections see the index
        times = []
        for eid in ids[scans:]:
            t0 = time.perf_counter()
            found = projections.which(store, eid)
            times.append(time.perf_counter() - t0)
            assert len(found.placements) == 1 and found.indexed
        id_times = []
        for _, row_id in rows[scans:]:
            seconds, n = by_id(store, row_id)
            id_times.append(seconds)
            assert n == 1
    times.sort()
    id_times.sort()
    return {
        "n_assignments": events,
        "build_log_s": built,
        "catch_up_s": projected,
        "index_build_s": index_s,
        "which_median_ms": 1000 * statistics.median(times),
        "which_p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
        "which_max_ms": 1000 * times[-1],
        "which_without_index_median_ms": 1000 * statistics.median(no_index) if no_index else 0,
        "by_id_median_ms": 1000 * statistics.median(id_times),
        "by_id_p95_ms": 1000 * id_times[int(0.95 * (len(id_times) - 1))],
        "by_id_max_ms": 1000 * id_times[-1],
        "by_id_without_index_median_ms": 1000 * statistics.median(id_scans) if id_scans else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--events", type=int, default=EVENTS)
    p.add_argument("--lookups", type=int, default=200)
    p.add_argument("--scans", type=int, default=3, help="lookups timed without the index")
    p.add_argument("--dir", help="SQLite: put the database file here")
    p.add_argument("--pg-url")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            result = measure(str(Path(d) / "which.db"), args.events, args.lookups, args.scans)
    else:
        with fresh_database("postgres", args.pg_url) as db:
            result = measure(db, args.events, args.lookups, args.scans)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:32} {value:,.1f}" if isinstance(value, float) else f"{key:32} {value:,}")


if __name__ == "__main__":
    main()

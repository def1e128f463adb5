"""Time the audit commands' library calls on runs of N assignments (default 1M).

    python benchmarks/audit_1m.py [--n 1000000] [--db PATH_OR_URL]

Builds two completed runs over the same N ids (different labels) and one incomplete run
of N/2, then times: listing runs, verify, compare (end to end, and the numpy part alone),
events to a null sink, and export to csv/npy/parquet. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

import numpy as np

from clusterstore.audit import (
    compare_labels,
    compare_runs,
    export_run,
    list_runs,
    load_labels,
    verify_run,
    write_events,
)
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import start_run

T = TypeVar("T")


def timed(label: str, fn: Callable[[], T]) -> T:
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:<40} {dt:7.2f} s   (max RSS so far {rss:.0f} MiB)", flush=True)
    return out


def build(store: EventStore, n: int) -> list[UUID]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    runs = []
    for seed, rows in ((1, n), (2, n), (3, n // 2)):
        r = np.random.default_rng(seed)
        w = start_run(store, model="bench", algorithm="kmeans-l2", n_embeddings=n, dim=4, k=100)
        w.record_centroids(r.random((100, 4)))
        w.record(ids[:rows], r.integers(0, 100, rows), r.random(rows).astype(np.float32))
        if rows == n:
            w.complete()
        runs.append(w.run_id)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--db")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    db = args.db or os.path.join(tmp, "bench.db")
    with EventStore.open(db) as store:
        label = f"build 2 x {args.n} + {args.n // 2} events"
        a, b, _ = timed(label, lambda: build(store, args.n))
        timed("list runs (one incomplete: counted)", lambda: list_runs(store))
        timed("verify one run", lambda: verify_run(store, a))
        timed("compare two runs (end to end)", lambda: compare_runs(store, a, b))
        ka, la = load_labels(store, a)
        kb, lb = load_labels(store, b)
        timed("compare: numpy part only", lambda: compare_labels(ka, la, kb[::-1], lb[::-1]))
        timed("events to a null sink", lambda: write_events(store, a, lambda s: None))
        for fmt in ("csv", "npy", "parquet"):
            path = os.path.join(tmp, f"a.{fmt}")
            job = lambda p=path, f=fmt: export_run(store, a, p, format=f)  # noqa: E731
            timed(f"export {fmt}", job)


if __name__ == "__main__":
    main()

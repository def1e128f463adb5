"""Steps for the commands that read: ``report`` and ``which``.

``report``: a completed run of n assignments (k = 100) is recorded first; timed:
``audit.write_report`` to a file (verify, the cluster statistics, the nearest members, the
model history); events/s counts the run's assignments, the note gives the file's size.

``which``: a completed run of n assignments is recorded and projected, and the lookup
index switched on, first; timed: ``LOOKUPS`` calls of ``projections.which`` for ids drawn
from the run; "events" are the lookups, the note gives the median latency.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from clusterstore import projections
from clusterstore.eventstore import EventStore

from .core import Clock, Measurement
from .plugins import _record_run
from .synthetic import embedding_ids

LOOKUPS = 200


def report(backend: str, n: int, db_url: str) -> Measurement:
    from clusterstore.audit import write_report

    clock = Clock()
    with EventStore.open(db_url) as store, tempfile.TemporaryDirectory() as d:
        _record_run(store, n)
        (head,) = store.runs()
        out = Path(d) / "report.html"
        with clock.running():
            write_report(store, head.run_id, out)
        size = os.path.getsize(out)
    return clock.measurement(n, f"{size / 1024:,.0f} KiB")


def which(backend: str, n: int, db_url: str) -> Measurement:
    clock = Clock()
    with EventStore.open(db_url) as store:
        _record_run(store, n)
        projections.catch_up_all(store)
        projections.set_lookup_index(store, True)
        ids = embedding_ids(n)
        step = max(1, n // LOOKUPS)
        latencies = []
        for row in range(0, n, step)[:LOOKUPS]:
            start = time.perf_counter()
            with clock.running():
                found = projections.which(store, ids[row].tobytes().hex())
            latencies.append(time.perf_counter() - start)
            if len(found.placements) != 1:
                raise AssertionError(f"which found {len(found.placements)} runs, expected 1")
    median = 1000 * statistics.median(latencies)
    return clock.measurement(len(latencies), f"median {median:.1f} ms per lookup")

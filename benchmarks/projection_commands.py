"""Steps for the ``projections`` commands and ``datasette-metadata``, timed as a user runs
them: the CLI command in process (as in ``audit_commands``), its store made off the clock.

- ``catch_up``: a completed run of n is recorded and projected, a second run of n
  (the same ids, 10% relabelled) appended; timed: ``projections catch-up``, which applies
  the second run to read models that already hold the first. Events: the n assignments
  applied; ``catch_up_vs_replay`` compares it with a full replay into empty read models.
- ``rebuild``: a completed, projected run of n; timed: ``projections rebuild`` (both read
  models replayed into new tables and swapped in). Events: the n assignments replayed.
- ``lookup_index``: a completed, projected run of n, the lookup index off; timed:
  ``projections lookup-index on`` (the read model re-projected with every row's id, the
  two lookup indexes built). Events: the n rows indexed.
- ``projections_status``: a run of n projected, a second run of n appended and not (the
  read models n + 2 events behind); timed: ``CALLS`` calls of ``projections status``.
  Events: the calls; the note gives the median per call.
- ``datasette_metadata``: a completed, projected run of n; timed: ``CALLS`` calls of
  ``datasette-metadata``. Events: the calls; the note gives the median per call.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from clusterstore import projections
from clusterstore.eventstore import EventStore

from .audit_commands import _cli, _one_run, _record, _relabelled, _timed_json
from .core import Clock, Measurement
from .synthetic import assignment_batches

CALLS = 20  # calls of the commands that read only a few rows


def _applied(doc: dict[str, Any], key: str) -> dict[str, int]:
    """Each projection's count under ``key`` in a catch-up or rebuild document."""
    return {p["name"]: p[key] for p in doc["projections"]}


def _second_run_behind(db_url: str, n: int) -> None:
    """A run of n projected, then a second run of n appended (not projected)."""
    with EventStore.open(db_url) as store:
        _record(store, assignment_batches(n), n)
        projections.catch_up_all(store)
        _record(store, _relabelled(n), n)


def catch_up(backend: str, n: int, db_url: str) -> Measurement:
    _second_run_behind(db_url, n)
    clock, doc = _timed_json(db_url, "projections", "catch-up", "--quiet")
    applied = _applied(doc, "n_applied")
    if applied.get("embeddingcluster") != n + 2:
        raise AssertionError(f"catch-up applied {applied}, expected {n + 2} events each")
    return clock.measurement(n, f"on top of a projected run of {n:,}")


def rebuild(backend: str, n: int, db_url: str) -> Measurement:
    _one_run(db_url, n)
    clock, doc = _timed_json(db_url, "projections", "rebuild", "--quiet")
    replayed = _applied(doc, "n_events")
    if replayed.get("embeddingcluster") != n + 2:
        raise AssertionError(f"rebuild replayed {replayed}, expected {n + 2} events each")
    return clock.measurement(n)


def lookup_index(backend: str, n: int, db_url: str) -> Measurement:
    _one_run(db_url, n)
    clock, doc = _timed_json(db_url, "projections", "lookup-index", "on")
    if doc != {"lookup_index": "on"}:
        raise AssertionError(f"lookup-index on answered {doc}")
    return clock.measurement(n)


def _calls(db_url: str, *args: str) -> Measurement:
    """``CALLS`` invocations of one command; events are the calls."""
    _cli(db_url, "--help")
    clock = Clock()
    seconds = []
    for _ in range(CALLS):
        start = time.perf_counter()
        with clock.running():
            _cli(db_url, *args)
        seconds.append(time.perf_counter() - start)
    median = 1000 * statistics.median(seconds)
    return clock.measurement(CALLS, f"median {median:.1f} ms per call")


def projections_status(backend: str, n: int, db_url: str) -> Measurement:
    _second_run_behind(db_url, n)
    m = _calls(db_url, "projections", "status", "--json")
    m.note = f"{m.note}; lag {n + 2:,} events"
    return m


def datasette_metadata(backend: str, n: int, db_url: str) -> Measurement:
    _one_run(db_url, n)
    return _calls(db_url, "datasette-metadata")

"""Steps for the audit commands, timed as a user runs them: the CLI command, in process.

Each step records what the command reads first, off the clock (a completed run of n
assignments, k = 100, with the read models caught up), then times one invocation of the
command through ``clusterstore``'s click group (``--db URL runs verify RUN --quiet`` ...):
opening the store, the library call and the output, all but the interpreter's start-up and
imports. Events/s counts the assignments the command reads:

- ``verify``: ``runs verify RUN`` (the log checks and the read-model check), n.
- ``compare``: ``runs compare A B`` of two runs over the same n ids (10% relabelled), 2n.
- ``export_csv`` / ``export_npy`` / ``export_parquet``: ``export RUN -o FILE``, n.
- ``runs_list``: ``runs list`` with ``RUNS`` completed runs (n assignments between them);
  the events are the runs listed.
- ``runs_show``: ``runs show RUN`` (a completed run: what its RunCompleted recorded), n.
- ``verify_crowded``: ``runs verify RUN`` as ``verify`` does, with ``OTHER_RUNS`` other runs
  of n assignments in the store (half recorded before RUN, half after), n: per-run reads
  use the keys, so its ratio to ``verify`` (``verify_crowded_vs_verify``) stays near 1.
- ``runs_events``: ``runs events RUN`` with standard output sent to a file (as
  ``> run.ndjson`` does: the lines are streamed, not held), the run not projected; the
  events are the lines written (n + 2).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

from clusterstore import projections
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import start_run

from .core import Clock, Measurement
from .synthetic import DIM, Assignments, K, assignment_batches

RUNS = 1_000  # runs in the store for ``runs_list``
OTHER_RUNS = 10  # other runs in the store for ``verify_crowded``
RELABELLED = 0.1  # share of the second run's rows that move to another cluster


def _record(store: EventStore, batches: Iterator[Assignments], n: int) -> UUID:
    with start_run(
        store, model="bench", algorithm="kmeans-l2", n_embeddings=n, dim=DIM, k=K, seed=0
    ) as run:
        for b in batches:
            run.record(b.ids, b.labels, b.distances)
    return run.run_id


def _relabelled(n: int) -> Iterator[Assignments]:
    """The same ids as ``assignment_batches(n)``, ``RELABELLED`` of them in another cluster."""
    for b in assignment_batches(n):
        rng = np.random.default_rng(b.lo)
        moved = rng.random(len(b.labels)) < RELABELLED
        labels = np.where(moved, (b.labels + 1) % K, b.labels).astype(np.uint32)
        yield b._replace(labels=labels)


def _cli(db_url: str, *args: str) -> str:
    """Run one command in process; its standard output (an error is raised, not printed)."""
    from click.testing import CliRunner

    from clusterstore.cli.main import cli

    result = CliRunner().invoke(cli, ["--db", db_url, *args], catch_exceptions=False)
    if result.exit_code != 0:
        raise AssertionError(f"{' '.join(args[:2])} exited {result.exit_code}: {result.output}")
    return result.stdout


def _timed_json(db_url: str, *args: str) -> tuple[Clock, Any]:
    """One ``--json`` invocation on the clock (the CLI's modules imported off it); the clock
    and the parsed document, for the step to check what the command did."""
    _cli(db_url, "--help")
    clock = Clock()
    with clock.running():
        out = _cli(db_url, *args, "--json")
    return clock, json.loads(out)


def _timed(db_url: str, events: int, *args: str) -> Measurement:
    _cli(db_url, "--help")  # imports the CLI's modules off the clock
    clock = Clock()
    with clock.running():
        out = _cli(db_url, *args)
    return clock.measurement(events, f"{len(out):,} B of output")


def _one_run(db_url: str, n: int) -> str:
    with EventStore.open(db_url) as store:
        run_id = _record(store, assignment_batches(n), n)
        projections.catch_up_all(store)
    return str(run_id)


def verify(backend: str, n: int, db_url: str) -> Measurement:
    return _timed(db_url, n, "runs", "verify", _one_run(db_url, n), "--quiet")


def verify_crowded(backend: str, n: int, db_url: str) -> Measurement:
    with EventStore.open(db_url) as store:
        for _ in range(OTHER_RUNS // 2):
            _record(store, _relabelled(n), n)
        run = _record(store, assignment_batches(n), n)
        for _ in range(OTHER_RUNS - OTHER_RUNS // 2):
            _record(store, _relabelled(n), n)
        projections.catch_up_all(store)
    m = _timed(db_url, n, "runs", "verify", str(run), "--quiet")
    m.note = f"{OTHER_RUNS} other runs of {n:,}; {m.note}"
    return m


def runs_show(backend: str, n: int, db_url: str) -> Measurement:
    return _timed(db_url, n, "runs", "show", _one_run(db_url, n), "--quiet")


def compare(backend: str, n: int, db_url: str) -> Measurement:
    with EventStore.open(db_url) as store:
        a = _record(store, assignment_batches(n), n)
        b = _record(store, _relabelled(n), n)
        projections.catch_up_all(store)
    return _timed(db_url, 2 * n, "runs", "compare", str(a), str(b), "--quiet")


def _export(fmt: str, n: int, db_url: str) -> Measurement:
    run = _one_run(db_url, n)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"run.{fmt}"
        m = _timed(db_url, n, "export", run, "-o", str(out), "--quiet")
        m.note = f"{out.stat().st_size / 1e6:,.1f} MB file"
    return m


def export_csv(backend: str, n: int, db_url: str) -> Measurement:
    return _export("csv", n, db_url)


def export_npy(backend: str, n: int, db_url: str) -> Measurement:
    return _export("npy", n, db_url)


def export_parquet(backend: str, n: int, db_url: str) -> Measurement:
    return _export("parquet", n, db_url)


def runs_list(backend: str, n: int, db_url: str) -> Measurement:
    per_run = max(1, n // RUNS)
    with EventStore.open(db_url) as store:
        for _ in range(RUNS):
            _record(store, assignment_batches(per_run), per_run)
        projections.catch_up_all(store)
    m = _timed(db_url, RUNS, "runs", "list", "--quiet")
    m.note = f"{RUNS:,} runs of {per_run:,} assignments; {m.note}"
    return m


def runs_events(backend: str, n: int, db_url: str) -> Measurement:
    from clusterstore.cli.main import cli

    with EventStore.open(db_url) as store:
        run = str(_record(store, assignment_batches(n), n))
    _cli(db_url, "--help")
    clock = Clock()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.ndjson"
        with path.open("w") as out, contextlib.redirect_stdout(out), clock.running():
            cli.main(["--db", db_url, "runs", "events", run], standalone_mode=False)
        size = path.stat().st_size
        with path.open("rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    if lines != n + 2:
        raise AssertionError(f"runs events wrote {lines} lines, expected {n + 2}")
    return clock.measurement(lines, f"{size / 1e6:,.1f} MB of NDJSON")

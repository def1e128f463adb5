"""Append throughput of the event log, and what PostgreSQL's never-skip lock costs.

    python -m clusterstore.benchmarks.append             # both backends, 1M events, median of 3
    python -m clusterstore.benchmarks.append --backend sqlite --events 200000 --repeat 1
    python -m clusterstore.benchmarks.append --lock-cost # PG: 4 writers x 250k, lock vs no lock

Single writer: one ``RunStarted``, then ``EventStore.append`` of ``PackedEvents`` batches
(100k ``AssignmentRecorded`` each, generated before the clock starts) into a fresh
database (a SQLite file in WAL mode, or a new PostgreSQL schema), timed from the first
batch to the last commit. Lock cost: writer processes, each with its own run, start
together and append their batches; the rate is all events over the wall time from the
first start to the last finish, once with the store's ``LOCK TABLE cs_commits`` and once
with ``PostgresRecorder._allocate_position`` replaced (in the benchmark only) by a sequence,
which gives unique but sparse positions in allocation order: the plain-sequence design the
lock exists to replace (a reader can skip events), i.e. the cost of the lock's guarantee.

The functions return numbers, so other code (``clusterstore bench``) can reuse them.
PostgreSQL: ``--pg-url`` or ``$CLUSTERSTORE_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each measurement uses a new schema.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url

from clusterstore.eventstore import EventStore, PackedEvents, RunStarted, pack_assignments

PG_ENV = "CLUSTERSTORE_BENCH_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
EVENTS = 1_000_000
BATCH = 100_000
REPEAT = 3
WRITERS = 4
PER_WRITER = 250_000
WRITER_BATCH = 10_000
POSITION_STRIDE = 1 << 24  # no-lock variant: sparse positions, a commit's events fit between


# ---------------------------------------------------------------- inputs and databases


def make_batches(events: int, batch: int, seed: int = 0) -> list[PackedEvents]:
    """``events`` random assignments (k=100) packed in batches of ``batch``."""
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, events, batch):
        n = min(batch, events - lo)
        out.append(
            pack_assignments(
                rng.integers(0, 256, (n, 16), dtype=np.uint8),
                rng.integers(0, 100, n),
                rng.random(n, dtype=np.float32),
            )
        )
    return out


def pg_base_url(value: str | None = None) -> URL:
    return make_url(value or os.environ.get(PG_ENV) or PG_DEFAULT).set(
        drivername="postgresql+psycopg"
    )


@contextmanager
def fresh_database(backend: str, pg_url: str | None = None) -> Iterator[str]:
    """A new, empty database: a SQLite file in a temporary directory, or a new PostgreSQL
    schema (dropped afterwards). Yields what ``EventStore.open`` takes."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cs-bench-") as tmp:
            yield str(Path(tmp) / "append.db")
        return
    base = pg_base_url(pg_url)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield base.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False
        )
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


def _started(n: int) -> RunStarted:
    return RunStarted(
        model="bench",
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=384,
        k=100,
        started_at=datetime.now(UTC),
    )


# ---------------------------------------------------------------- one writer


def append_rate(db: str, batches: list[PackedEvents]) -> float:
    """Events/s appending ``batches`` to one new run in the store at ``db``."""
    total = sum(b.count for b in batches)
    with EventStore.open(db) as store:
        run = uuid.uuid4()
        head = store.append(run, [_started(total)], expected_seq=0).head
        t0 = time.perf_counter()
        for batch in batches:
            head = store.append(run, batch, expected_seq=head).head
        elapsed = time.perf_counter() - t0
        assert head == total + 1
    return total / elapsed


def single_writer(
    backend: str,
    *,
    events: int = EVENTS,
    batch: int = BATCH,
    repeat: int = REPEAT,
    pg_url: str | None = None,
) -> list[float]:
    """Events/s of ``repeat`` runs, each into a fresh database."""
    batches = make_batches(events, batch)
    rates = []
    for _ in range(repeat):
        with fresh_database(backend, pg_url) as db:
            rates.append(append_rate(db, batches))
    return rates


# ---------------------------------------------------------------- several PG writers


def _sequence_position(self: Any, conn: Connection) -> int:
    """The no-lock variant: a position from a sequence, no serialisation of commits."""
    value = conn.exec_driver_sql("SELECT nextval('cs_bench_position')").scalar()
    return int(value) * POSITION_STRIDE  # type: ignore[arg-type]


def _writer(
    db: str,
    lock: bool,
    events: int,
    batch: int,
    seed: int,
    barrier: Any,
    results: Any,
) -> None:
    if not lock:
        from clusterstore.eventstore.postgres import PostgresRecorder

        PostgresRecorder._allocate_position = _sequence_position  # type: ignore[method-assign]
    batches = make_batches(events, batch, seed)
    with EventStore.open(db) as store:
        run = uuid.uuid4()
        head = store.append(run, [_started(events)], expected_seq=0).head
        barrier.wait()
        t0 = time.monotonic()
        for b in batches:
            head = store.append(run, b, expected_seq=head).head
        results.put((t0, time.monotonic(), head - 1))


def concurrent_rate(
    lock: bool,
    *,
    writers: int = WRITERS,
    events_per_writer: int = PER_WRITER,
    batch: int = WRITER_BATCH,
    pg_url: str | None = None,
) -> float:
    """Events/s of ``writers`` processes appending at once to one new PostgreSQL schema."""
    ctx = mp.get_context("spawn")
    with fresh_database("postgres", pg_url) as db:
        with EventStore.open(db) as store, store.transaction(write=True) as conn:
            conn.exec_driver_sql("CREATE SEQUENCE cs_bench_position")
        barrier = ctx.Barrier(writers)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_writer, args=(db, lock, events_per_writer, batch, i, barrier, results)
            )
            for i in range(writers)
        ]
        for p in procs:
            p.start()
        spans = [results.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode:
                raise RuntimeError(f"a writer process failed (exit code {p.exitcode})")
        with EventStore.open(db) as store:  # the variant really ran: dense vs sparse
            dense = store.max_position() == writers * (events_per_writer + 1)
        assert dense == lock, "the no-lock variant was not installed in the writers"
    assert all(n == events_per_writer for _, _, n in spans)
    wall = max(t1 for _, t1, _ in spans) - min(t0 for t0, _, _ in spans)
    return writers * events_per_writer / wall


def lock_cost(
    *,
    repeat: int = REPEAT,
    writers: int = WRITERS,
    events_per_writer: int = PER_WRITER,
    batch: int = WRITER_BATCH,
    pg_url: str | None = None,
) -> dict[str, list[float]]:
    """Rates with and without the never-skip lock, interleaved so that load drifts on a
    shared machine hit both variants alike."""
    rates: dict[str, list[float]] = {"lock": [], "no_lock": []}
    for _ in range(repeat):
        for name, lock in (("lock", True), ("no_lock", False)):
            rates[name].append(
                concurrent_rate(
                    lock,
                    writers=writers,
                    events_per_writer=events_per_writer,
                    batch=batch,
                    pg_url=pg_url,
                )
            )
    return rates


# ---------------------------------------------------------------- command line


def _report(label: str, rates: list[float], out: Callable[[str], None] = print) -> float:
    median = statistics.median(rates)
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    out(f"{label:<64} {median:>10,.0f} events/s   (runs: {runs})")
    return median


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument(
        "--lock-cost", action="store_true", help="PG: concurrent writers with vs without lock"
    )
    parser.add_argument("--writers", type=int, default=WRITERS)
    parser.add_argument("--per-writer", type=int, default=PER_WRITER)
    parser.add_argument("--writer-batch", type=int, default=WRITER_BATCH)
    args = parser.parse_args(argv)

    if args.lock_cost:
        both = lock_cost(
            repeat=args.repeat,
            writers=args.writers,
            events_per_writer=args.per_writer,
            batch=args.writer_batch,
            pg_url=args.pg_url,
        )
        what = f"{args.writers} writers x {args.per_writer:,}, batches of {args.writer_batch:,}"
        with_lock = _report(f"postgres, {what}, LOCK TABLE", both["lock"])
        without = _report(f"postgres, {what}, no lock (sequence)", both["no_lock"])
        print(f"{'ratio lock / no lock':<64} {with_lock / without:>10.2f}")
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        rates = single_writer(
            backend,
            events=args.events,
            batch=args.batch,
            repeat=args.repeat,
            pg_url=args.pg_url,
        )
        _report(f"{backend}, {args.events:,} events, batches of {args.batch:,}", rates)


if __name__ == "__main__":
    main()

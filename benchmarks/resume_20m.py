"""Resume in constant time, measured: a 20M-assignment run stopped near its end, resumed.

    python -m clusterstore.benchmarks.resume_20m                       # SQLite and PostgreSQL
    python -m clusterstore.benchmarks.resume_20m --backend sqlite --n 2000000 --twin generated

For each backend, through the public run API (``start_run``, ``resume_run``):

1. a run of N assignments (noise labels -1 among them) is written in batches of 100k up to
   ``--tail`` rows before its end and left without an end event (as a killed writer
   leaves it; its checkpoints are what the writer stored after each batch);
2. a fresh ``EventStore`` times ``resume_run`` (the log's head by key, the checkpoint, the
   fold of the rows after it, the RunResumed append) and then the first new row's commit:
   wall and CPU time of this process, and how many events it read;
3. the baseline, in the same session: the whole-log fold that resume did before
   checkpoints (``replay_run``), on the same run;
4. the rest is recorded and the run completed; its digest is compared with an
   uninterrupted run of the same N (``--twin full``, batches of 250k) or with the digest of
   the same rows computed in memory (``--twin generated``, faster).

PostgreSQL is ``--pg-url`` or ``$CLUSTERSTORE_BENCH_PG_URL``, in a new schema dropped
afterwards; SQLite a file in a temporary directory. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.codec import pack_assignments
from clusterstore.eventstore.digest import AssignmentDigest
from clusterstore.eventstore.runs import replay_run, resume_run, start_run

from .databases import create_pg_schema, drop_pg_schema, pg_base_url, pg_check

K = 100
CHUNK = 1_000_000  # rows generated at a time
BATCH = 100_000


def rows(lo: int, hi: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], Any]:
    """Input rows lo..hi-1, a pure function of the row: id = row, a scrambled label in
    -1 .. K-1 (-1: noise), a distance."""
    r = np.arange(lo, hi, dtype=np.uint64)
    ids = np.zeros((hi - lo, 2), dtype=">u8")
    ids[:, 0] = 0x0123456789ABCDEF
    ids[:, 1] = r
    labels = ((r * np.uint64(2654435761)) >> np.uint64(7)) % np.uint64(K + 1)
    return (
        ids.view(np.uint8).reshape(-1, 16),
        labels.astype(np.int64) - 1,
        (r % np.uint64(1000)).astype(np.float32) / 1000,
    )


def record(writer: Any, lo: int, hi: int) -> None:
    for a in range(lo, hi, CHUNK):
        writer.record(*rows(a, min(a + CHUNK, hi)), start_row=a)


def generated_digest(n: int) -> str:
    d = AssignmentDigest()
    for a in range(0, n, CHUNK):
        packed = pack_assignments(*rows(a, min(a + CHUNK, n)))
        d.update(packed.data, packed.count)
    return d.hexdigest()


def new_run(store: EventStore, n: int, batch: int) -> Any:
    w = start_run(
        store, model="bench", algorithm="kmeans-l2", n_embeddings=n, dim=4, k=K, batch_size=batch
    )
    w.record_centroids(np.random.default_rng(0).random((K, 4)))
    return w


@contextmanager
def database(backend: str, pg_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cs_resume_") as d:
            yield str(Path(d) / "resume.db")
        return
    base = pg_base_url(pg_url)
    why = pg_check(base)
    if why:
        raise SystemExit(why)
    url, name = create_pg_schema(base)
    try:
        yield url
    finally:
        drop_pg_schema(base, name)


class Counting:
    """Counts the events a store hands out through ``read_stream_pages``/``read_raw`` (every
    read of a run's events goes through one of them); also used by the resume tests."""

    def __init__(self, store: EventStore) -> None:
        self.events = 0
        pages, raw = store.read_stream_pages, store.read_raw

        def counted_pages(*a: Any, **kw: Any) -> Iterator[list[Any]]:
            for page in pages(*a, **kw):
                self.events += len(page)
                yield page

        def counted_raw(*a: Any, **kw: Any) -> Iterator[Any]:
            for ev in raw(*a, **kw):
                self.events += 1
                yield ev

        store.read_stream_pages = counted_pages  # type: ignore[method-assign]
        store.read_raw = counted_raw  # type: ignore[method-assign]


def measure(backend: str, db: str, n: int, tail: int, twin: str, baseline: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "n": n, "stopped_at_row": n - tail}
    stop = n - tail
    t = time.perf_counter()
    with EventStore.open(db) as store:
        writer = new_run(store, n, BATCH)
        record(writer, 0, stop)
        run_id: UUID = writer.run_id
        # stopped: no RunCompleted, no RunFailed (as SIGKILL leaves a run)
    out["build_s"] = time.perf_counter() - t
    out["build_rate"] = stop / out["build_s"]
    print(f"[{backend}] built {stop:,} rows in {out['build_s']:.1f} s", flush=True)

    with EventStore.open(db) as store:
        state = store.read_checkpoint(run_id)
        out["checkpoint_rows"] = None if state is None else state.rows
        counter = Counting(store)
        t0, c0 = time.perf_counter(), time.process_time()
        progress, resumed = resume_run(store, run_id, batch_size=BATCH)
        t1, c1 = time.perf_counter(), time.process_time()
        resumed.record(*rows(stop, stop + 1), start_row=stop)  # the first new row
        t2, c2 = time.perf_counter(), time.process_time()
        out.update(
            resume_run_s=t1 - t0,
            resume_run_cpu_s=c1 - c0,
            first_row_s=t2 - t0,
            first_row_cpu_s=c2 - c0,
            events_read=counter.events,
            rows_done=progress.rows_done,
        )
        print(
            f"[{backend}] resume_run {out['resume_run_s']:.3f} s (CPU {out['resume_run_cpu_s']:.3f}"
            f" s), first new row committed at {out['first_row_s']:.3f} s; "
            f"{counter.events:,} events read; checkpoint at row {out['checkpoint_rows']}",
            flush=True,
        )
        if baseline:
            t0, c0 = time.perf_counter(), time.process_time()
            life = replay_run(store, run_id)
            out["full_fold_s"] = time.perf_counter() - t0
            out["full_fold_cpu_s"] = time.process_time() - c0
            out["full_fold_rows"] = life.rows
            out["speedup_wall"] = out["full_fold_s"] / out["resume_run_s"]
            print(
                f"[{backend}] baseline: whole-log fold {out['full_fold_s']:.1f} s (CPU "
                f"{out['full_fold_cpu_s']:.1f} s) = {out['speedup_wall']:.0f}x resume_run",
                flush=True,
            )
        record(resumed, stop + 1, n)
        completed = resumed.complete()
        out["digest"] = completed.digest

    t = time.perf_counter()
    if twin == "full":
        with EventStore.open(db) as store:
            whole = new_run(store, n, 250_000)
            record(whole, 0, n)
            reference = whole.complete().digest
    else:
        reference = generated_digest(n)
    out["twin"] = twin
    out["twin_s"] = time.perf_counter() - t
    out["reference_digest"] = reference
    out["same_digest"] = reference == completed.digest
    print(
        f"[{backend}] completed: digest {completed.digest[:16]} vs uninterrupted ({twin}) "
        f"{reference[:16]}: {'same' if out['same_digest'] else 'DIFFERENT'}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--n", type=int, default=20_000_000, help="assignments in the run")
    p.add_argument("--tail", type=int, default=250_000, help="rows left when stopped")
    p.add_argument("--twin", choices=["full", "generated"], default="full")
    p.add_argument("--no-baseline", action="store_true", help="skip the whole-log fold")
    p.add_argument("--pg-url", default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        with database(backend, args.pg_url) as db:
            results.append(measure(backend, db, args.n, args.tail, args.twin, not args.no_baseline))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if not all(r["same_digest"] for r in results):
        raise SystemExit("a resumed run's digest differs from the uninterrupted run's")


if __name__ == "__main__":
    main()

"""Replay throughput: rebuilding the ``embeddingcluster`` read model from the log.

    python -m clusterstore.benchmarks.replay            # both backends, 1M, median of 3
    python -m clusterstore.benchmarks.replay --backend sqlite --events 10000000 --repeat 1 \
        --dir /tmp
    python -m clusterstore.benchmarks.replay --backend postgres --ceiling  # + COPY ceilings

The log: ``--runs`` completed runs (RunStarted, ``AssignmentRecorded`` appended with
``EventStore.append`` of ``PackedEvents`` from ``pack_assignments`` in batches of 100k,
RunCompleted with the digest), generated batch by batch (memory stays flat for 10M).
Replay: ``projections.rebuild(store, ["embeddingcluster"])`` timed end to end (reading the
log, loading a new generation, its indexes, the atomic swap, dropping the old one), each
repetition in a fresh spawned process so its peak RSS (``VmHWM``) is its own; the
process's RSS before the replay is reported beside it. Events/s counts every event of the
log, as the projection reads them all.

PostgreSQL ceilings (``--ceiling``): the read model's rows of the same log, prepared before
the clock starts and COPYed in batches of 100k (one transaction each): (a) binary COPY
streams built in bulk into a table shaped like the read model's own (``pj_ec_assignment``:
seq, cluster, run_key, distance, embedding_id, legacy_id; primary key (run_key, seq));
(a') the same into that table without its key, the key added after the last COPY (on the
clock: how a rebuild loads, ``primary_key_after_load``); (b)
the same in the legacy SQLModel shape (id uuid primary key, embedding_id,
clustering_result_id, cluster_id); (c) the legacy shape the way a competent user writes it
(psycopg 3 binary COPY, ``Copy.write_row`` per row of UUID objects), the ceiling
definition of the append benchmark. Every ceiling ends with ``ANALYZE`` of its table on
the clock, as the replay does before its swap. Each repetition times the replay and then
every ceiling once (the reverse order every other repetition), so load drift on the
shared machine hits both alike.

The functions return numbers, so ``clusterstore bench`` can reuse them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import queue
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from clusterstore.benchmarks.append import fresh_database
from clusterstore.eventstore import (
    AssignmentDigest,
    EventStore,
    RunCompleted,
    RunStarted,
    pack_assignments,
)

EVENTS = 1_000_000
RUNS = 4
BATCH = 100_000
REPEAT = 3
K = 100


# ---------------------------------------------------------------- the log


def build_log(db: str, events: int = EVENTS, *, runs: int = RUNS, seed: int = 0) -> int:
    """Append ``runs`` completed runs holding ``events`` assignments in all; returns the
    log's head position."""
    rng = np.random.default_rng(seed)
    with EventStore.open(db) as store:
        for r in range(runs):
            n = events // runs + (1 if r < events % runs else 0)
            run = uuid.uuid4()
            started = RunStarted(
                model="bench",
                algorithm="kmeans-l2",
                n_embeddings=n,
                dim=384,
                k=K,
                started_at=datetime.now(UTC),
            )
            head = store.append(run, [started], expected_seq=0).head
            digest = AssignmentDigest.for_run(started)
            sizes = np.zeros(K, dtype=np.int64)
            for lo in range(0, n, BATCH):
                m = min(BATCH, n - lo)
                labels = rng.integers(0, K, m)
                packed = pack_assignments(
                    rng.integers(0, 256, (m, 16), dtype=np.uint8),
                    labels,
                    rng.random(m, dtype=np.float32),
                )
                head = store.append(run, packed, expected_seq=head).head
                digest.update(packed.data, packed.count)
                sizes += np.bincount(labels, minlength=K)
            done = RunCompleted(
                count=n,
                digest=digest.hexdigest(),
                finished_at=datetime.now(UTC),
                cluster_sizes=[int(x) for x in sizes],
            )
            store.append(run, [done], expected_seq=head)
        return store.max_position()


@contextmanager
def database_with_log(
    backend: str, events: int, *, pg_url: str | None = None, directory: str | None = None
) -> Iterator[str]:
    """A fresh database holding a log of ``events`` assignments (dropped afterwards)."""
    if backend == "sqlite" and directory is not None:
        path = Path(directory) / f"cs-replay-{uuid.uuid4().hex[:8]}.db"
        try:
            build_log(str(path), events)
            yield str(path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with fresh_database(backend, pg_url) as db:
        build_log(db, events)
        yield db


# ---------------------------------------------------------------- replay


def replay(db: str, *, batch_events: int | None = None) -> dict[str, float]:
    """Rebuild ``embeddingcluster`` once in this process. ``events_per_s``: events over the
    time until readers see the new generation; ``events_per_s_total`` also counts dropping
    the generation it replaced (SQLite reads every page of a dropped table)."""
    from clusterstore import projections
    from clusterstore.projections.runner import BATCH_EVENTS

    with EventStore.open(db) as store:
        done = projections.rebuild(
            store, ["embeddingcluster"], batch_events=batch_events or BATCH_EVENTS
        )["embeddingcluster"]
    return {
        "events": done.events,
        "seconds": done.seconds,
        "live_seconds": done.live_seconds,
        "events_per_s": done.events / done.live_seconds,
        "events_per_s_total": done.events / done.seconds,
    }


def _rss_mb() -> float:
    """This process's peak RSS: Linux's ``VmHWM``, the high-water mark of the process's
    own memory since its exec (``ru_maxrss`` of a spawned child starts at its parent's peak,
    which holds the ceilings' prepared streams), else ``ru_maxrss``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _replay_child(db: str, batch_events: int | None, out: Any) -> None:
    from clusterstore import projections  # noqa: F401  (imported before the baseline is taken)

    with EventStore.open(db):
        pass
    before = _rss_mb()
    result = replay(db, batch_events=batch_events)
    out.put({**result, "rss_before_mb": before, "peak_rss_mb": _rss_mb()})


def replay_in_child(db: str, *, batch_events: int | None = None) -> dict[str, float]:
    """``replay`` in a fresh spawned process, with its peak RSS."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_replay_child, args=(db, batch_events, out))
    proc.start()
    try:
        while True:
            try:
                result: dict[str, float] = out.get(timeout=1)
                return result
            except queue.Empty:
                if not proc.is_alive():
                    died = f"the replay process died (exit code {proc.exitcode})"
                    raise RuntimeError(died) from None
    finally:
        proc.join()


def measure_replay(
    backend: str,
    *,
    events: int = EVENTS,
    repeat: int = REPEAT,
    pg_url: str | None = None,
    directory: str | None = None,
    ceiling: bool = False,
) -> dict[str, Any]:
    """Build one log, replay it ``repeat`` times (each in a fresh process); with
    ``ceiling`` (PostgreSQL) also time the raw binary COPY ceilings on the same rows, each
    repetition of every ceiling next to a replay (replay first, then the ceilings, in
    reverse order every other repetition), so load drift hits both alike."""
    with database_with_log(backend, events, pg_url=pg_url, directory=directory) as db:
        ceilings = _ceiling_jobs(db) if ceiling and backend == "postgres" else {}
        runs: list[dict[str, float]] = []
        rates_of: dict[str, list[float]] = {name: [] for name in ceilings}
        names = ["replay", *ceilings]
        for r in range(repeat):
            for name in names if r % 2 == 0 else reversed(names):
                if name == "replay":
                    runs.append(replay_in_child(db))
                else:
                    rates_of[name].append(ceilings[name]())
        rates = [r["events_per_s"] for r in runs]
        totals = [r["events_per_s_total"] for r in runs]
        out: dict[str, Any] = {
            "backend": backend,
            "events": int(runs[0]["events"]),
            "events_per_s": _spread(rates),
            "runs": rates,
            "events_per_s_total": _spread(totals),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "rss_before_mb": max(r["rss_before_mb"] for r in runs),
        }
        if ceilings:
            out["ceilings"] = {name: _spread(v) for name, v in rates_of.items()}
        return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---------------------------------------------------------------- PostgreSQL ceilings

_SAME_ROWS = (
    "CREATE TABLE {t} (seq bigint NOT NULL, cluster bigint NOT NULL, run_key integer NOT NULL, "
    "distance real, embedding_id uuid NOT NULL, legacy_id uuid, PRIMARY KEY (run_key, seq))"
)
_LEGACY_ROWS = (
    "CREATE TABLE {t} (id uuid PRIMARY KEY, embedding_id uuid NOT NULL, "
    "clustering_result_id uuid NOT NULL, cluster_id uuid NOT NULL)"
)
_UUID_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("id", "V16"),
        ("l2", ">i4"),
        ("embedding_id", "V16"),
        ("l3", ">i4"),
        ("result", "V16"),
        ("l4", ">i4"),
        ("cluster_id", "V16"),
    ]
)
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)


def _streams(db: str) -> tuple[list[bytes], list[bytes], int]:
    """The read model's rows of the whole log as binary COPY streams of 100k rows: in the
    read-model table's shape, and in the legacy shape."""
    from clusterstore.eventstore.postgres import rows_copy_stream as copy_stream
    from clusterstore.eventstore.rows import AssignmentRows as Rows
    from clusterstore.projections import ids
    from clusterstore.projections.embeddingcluster import _block_rows

    same, legacy = [], []
    total = 0
    keys: dict[uuid.UUID, int] = {}
    with EventStore.open(db) as store:
        position = 0
        while blocks := store.read_feed_blocks(after=position, max_events=BATCH):
            position = blocks[-1].last_position
            parts = [
                _block_rows(keys.setdefault(b.run_id, len(keys) + 1), b)
                for b in blocks
                if b.n_assignments
            ]
            if not parts:
                continue
            rows = Rows.concat(parts)
            total += len(rows)
            same.append(copy_stream(rows))
            out = np.empty(len(rows), dtype=_UUID_ROW)
            out["n"], out["l1"], out["l2"], out["l3"], out["l4"] = 4, 16, 16, 16, 16
            run_of = {v: k for k, v in keys.items()}
            for key in np.unique(rows.run_key).tolist():
                sel = rows.run_key == key
                run = run_of[key]
                pre = bytes.fromhex(ids.prefix(ids.ASSIGNMENT_DOMAIN, run))
                cpre = bytes.fromhex(ids.prefix(ids.CLUSTER_DOMAIN, run))
                top = np.uint64(1 << 63)
                out["id"][sel] = _ids(pre, rows.seq[sel].astype(np.uint64) | top)
                out["cluster_id"][sel] = _ids(cpre, rows.cluster[sel].astype(np.uint64) | top)
                out["result"][sel] = np.frombuffer(run.bytes, dtype="V16")[0]
            out["embedding_id"] = rows.embedding_id
            legacy.append(_HEADER + out.tobytes() + b"\xff\xff")
    return same, legacy, total


def _uuid_tuples(stream: bytes) -> list[tuple[uuid.UUID, ...]]:
    """The rows of a legacy-shaped COPY stream as tuples of UUIDs (made before the clock)."""
    rec = np.frombuffer(stream[len(_HEADER) : -2], dtype=_UUID_ROW)
    cols = [rec[f].tobytes() for f in ("id", "embedding_id", "result", "cluster_id")]
    return [tuple(uuid.UUID(bytes=c[i * 16 : (i + 1) * 16]) for c in cols) for i in range(len(rec))]


def _ids(prefix: bytes, tails: np.ndarray) -> np.ndarray:
    raw = np.empty((len(tails), 16), dtype=np.uint8)
    raw[:, :8] = np.frombuffer(prefix, dtype=np.uint8)
    raw[:, 8:] = tails.astype(">u8").view(np.uint8).reshape(-1, 8)
    return raw.view("V16").reshape(-1)


def _copy_rate(
    db: str, ddl: str, columns: str, streams: list[Any], rows: int, *, after: str = ""
) -> float:
    """Rows/s COPYing ``streams`` (binary COPY streams, or lists of row tuples written with
    ``Copy.write_row``) in one transaction each into a new table made by ``ddl``, then
    running ``after`` (e.g. adding the primary key) and ``ANALYZE`` on the clock (the
    replay refreshes its tables' statistics before the swap too: with autovacuum off,
    nothing else would)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(db)
    conn = psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        options=str(url.query.get("options", "")),
    )
    table = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    try:
        conn.execute(ddl.format(t=table))
        conn.commit()
        t0 = time.perf_counter()
        for stream in streams:
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                if isinstance(stream, bytes):
                    copy.write(stream)
                else:
                    copy.set_types(["uuid"] * 4)
                    for row in stream:
                        copy.write_row(row)
            conn.commit()
        if after:
            conn.execute(after.format(t=table))
        conn.execute(f"ANALYZE {table}")
        conn.commit()
        seconds = time.perf_counter() - t0
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    finally:
        conn.close()
    return rows / seconds


def _ceiling_jobs(db: str) -> dict[str, Callable[[], float]]:
    """Each ceiling as a job returning rows/s, its streams prepared now (off the clock)."""
    same, legacy, total = _streams(db)
    tuples = [_uuid_tuples(stream) for stream in legacy]
    same_columns = "run_key, seq, embedding_id, cluster, distance, legacy_id"
    legacy_columns = "id, embedding_id, clustering_result_id, cluster_id"
    # the same rows loaded the way a rebuild loads them: the key added after the COPYs
    keyless = _SAME_ROWS.replace(", PRIMARY KEY (run_key, seq))", ")")
    add_key = "ALTER TABLE {t} ADD PRIMARY KEY (run_key, seq)"
    return {
        "copy_same_rows": lambda: _copy_rate(db, _SAME_ROWS, same_columns, same, total),
        "copy_legacy_rows": lambda: _copy_rate(db, _LEGACY_ROWS, legacy_columns, legacy, total),
        "write_row_legacy_rows": lambda: _copy_rate(
            db, _LEGACY_ROWS, legacy_columns, tuples, total
        ),
        "copy_same_rows_key_after": lambda: _copy_rate(
            db, keyless, same_columns, same, total, after=add_key
        ),
    }


def pg_ceilings(db: str, *, repeat: int = REPEAT) -> dict[str, dict[str, float]]:
    """Rows/s of raw binary COPY of the read model's rows, median/min/max of ``repeat``
    (each ceiling's repetitions in a row; ``measure_replay`` interleaves them with
    replays)."""
    return {
        name: _spread([job() for _ in range(repeat)]) for name, job in _ceiling_jobs(db).items()
    }


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay throughput of embeddingcluster.")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--dir", default=None, help="SQLite: put the database file here")
    parser.add_argument("--ceiling", action="store_true", help="PostgreSQL: raw COPY ceilings")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    results = [
        measure_replay(
            b,
            events=args.events,
            repeat=args.repeat,
            pg_url=args.pg_url,
            directory=args.dir,
            ceiling=args.ceiling,
        )
        for b in backends
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        rate = r["events_per_s"]
        print(
            f"{r['backend']:8} {r['events']:>11,} events  median {rate['median']:>10,.0f}/s "
            f"(min {rate['min']:,.0f}, max {rate['max']:,.0f})  peak RSS "
            f"{r['peak_rss_mb']:.0f} MB (before replay {r['rss_before_mb']:.0f} MB)"
        )
        total = r["events_per_s_total"]
        print(
            f"{'':8} {'':>11}         with the old generation dropped: median "
            f"{total['median']:>10,.0f}/s (min {total['min']:,.0f}, max {total['max']:,.0f})"
        )
        for name, c in r.get("ceilings", {}).items():
            print(
                f"         {name:18} median {c['median']:>10,.0f} rows/s "
                f"(min {c['min']:,.0f}, max {c['max']:,.0f}); replay/ceiling "
                f"{rate['median'] / c['median']:.2f}x"
            )


if __name__ == "__main__":
    main()

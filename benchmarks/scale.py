"""The scale run: 100M+ AssignmentRecorded events on one machine (not part of CI).

Appends synthetic assignments through the public run API (``eventstore.runs.start_run``,
``RunWriter.record`` in batches of 100k, ``complete``), following a fixed plan: ten runs of
1M, one run of ``--big`` events (default 20M), then runs of 1M up to ``--events``
(120M = 100 runs of 1M + the 20M run). After every ``--step`` events (default 10M) the read
models catch up (``Store.catch_up``, the same code as ``projections catch-up``) and one line
is reported for that step:

- append rate: events of the step / wall time of appending them (and the CPU seconds);
- replay rate: events of the step / wall time of the catch-up that applies them;
- peak RSS of each phase (VmHWM, reset before the phase through ``/proc/self/clear_refs``);
- bytes on disk per event so far, the log and the read models apart (SQLite: the file's
  growth during the appends and during the catch-ups, after a WAL checkpoint; PostgreSQL:
  ``pg_total_relation_size`` of the schema's ``cs_`` and ``pj_`` tables and partitions);
- unless ``--no-audit``, after the first step, every ``--audit-every`` steps and the last,
  the audit commands as a user runs them (a fresh
  ``python -m clusterstore`` process each; wall seconds): ``runs list``, ``runs show`` and
  ``runs verify`` of the first 1M run, ``which`` of one of its embedding ids, and
  ``export`` of that run (the lookup by run), so their growth with the store's size shows.

Resumable: run ids are fixed by the plan (uuid5), so a second invocation on the same store
skips the completed runs, resumes a run left running (``resume_run``) and goes on (the read
models first catch up, untimed); each step's line is appended to ``--out`` (JSON lines) and
the table is printed from that file. SQLite's bytes per event are exact only for an
uninterrupted run (what a killed step wrote after its last report is attributed to neither).

    python -m clusterstore.benchmarks.scale --db /data/scale.db --events 120000000
    python -m clusterstore.benchmarks.scale --db "postgresql://u@h/db?options=-csearch_path%3Ds" \\
        --events 30000000 --partitions 8
    python -m clusterstore.benchmarks.scale --table --out scale.jsonl   # print the table only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import clusterstore
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import resume_run, start_run

from .databases import _connect
from .synthetic import SEED, assignment_batches

STEP = 10_000_000
RUN = 1_000_000
BIG = 20_000_000
K = 100
BATCH = 100_000  # rows per record() call and per append transaction
PLAN_NAMESPACE = uuid.UUID("6c1f3a52-1b1e-4d0c-9d1e-5ca1e0000000")


@dataclass(frozen=True)
class PlannedRun:
    index: int
    run_id: uuid.UUID
    n: int


def plan(total: int, big: int = BIG) -> list[PlannedRun]:
    """Ten runs of 1M, the big run, then runs of 1M until ``total`` (the last may be short)."""
    sizes: list[int] = []
    left = total
    while left > 0:
        n = big if len(sizes) == 10 and big else RUN
        sizes.append(min(n, left))
        left -= sizes[-1]
    return [
        PlannedRun(i, uuid.uuid5(PLAN_NAMESPACE, f"scale-run-{i}-{n}"), n)
        for i, n in enumerate(sizes)
    ]


# ---------------------------------------------------------------------------- measuring


def reset_peak() -> None:
    """Reset VmHWM (Linux: writing 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    m = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sqlite_bytes(path: str) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(Path(path + s).stat().st_size for s in ("", "-wal") if Path(path + s).exists())


def pg_bytes(db_url: str) -> tuple[int, int]:
    """(log bytes, read-model bytes) of the URL's schema: every table and partition."""
    from sqlalchemy.engine import make_url

    with _connect(make_url(db_url)) as conn:
        rows = conn.execute(
            "SELECT left(c.relname, 3), coalesce(sum(pg_total_relation_size(c.oid)), 0) "
            "FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
            "AND c.relkind = 'r' GROUP BY 1"
        ).fetchall()
    sizes = {str(a): int(b) for a, b in rows}
    return sizes.get("cs_", 0), sizes.get("pj_", 0)


class Sizes:
    """Bytes of the log and of the read models so far."""

    def __init__(self, db: str, state: dict[str, Any]):
        self.db = db
        self.sqlite = "://" not in db
        self.log = int(state.get("log_bytes", 0))
        self.read_model = int(state.get("rm_bytes", 0))
        self._last = int(state.get("file_bytes", 0))

    def resync(self) -> None:
        """SQLite: take the file as it is now (what an interrupted step wrote after its last
        report is not attributed to the log or the read models)."""
        if self.sqlite and Path(self.db).exists():
            self._last = sqlite_bytes(self.db)

    def after_append(self) -> None:
        if self.sqlite:
            now = sqlite_bytes(self.db)
            self.log += now - self._last
            self._last = now
        else:
            self.log, self.read_model = pg_bytes(self.db)

    def after_catch_up(self) -> None:
        if self.sqlite:
            now = sqlite_bytes(self.db)
            self.read_model += now - self._last
            self._last = now
        else:
            self.log, self.read_model = pg_bytes(self.db)

    def state(self) -> dict[str, int]:
        return {"log_bytes": self.log, "rm_bytes": self.read_model, "file_bytes": self._last}


def cli_seconds(db: str, *args: str) -> float:
    """Wall seconds of ``python -m clusterstore --db DB ARGS`` (a fresh process, output
    discarded); a failure raises."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "clusterstore", "--db", db, *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - t0


def audit(db: str, run: PlannedRun) -> dict[str, float]:
    first_id = next(assignment_batches(1, k=K, seed=SEED + run.index)).ids[0]
    eid = str(uuid.UUID(bytes=bytes(first_id)))
    with tempfile.TemporaryDirectory(prefix="cs_scale_") as d:
        return {
            "runs_list_s": cli_seconds(db, "runs", "list", "--json"),
            "runs_show_s": cli_seconds(db, "runs", "show", str(run.run_id), "--json"),
            "verify_s": cli_seconds(db, "runs", "verify", str(run.run_id), "--json"),
            "which_s": cli_seconds(db, "which", eid, "--json"),
            "export_s": cli_seconds(db, "export", str(run.run_id), "-o", f"{d}/run.npy"),
        }


# ---------------------------------------------------------------------------- appending


def run_batches(run: PlannedRun, start_row: int) -> Iterator[tuple[int, Any, Any, Any]]:
    for b in assignment_batches(run.n, k=K, seed=SEED + run.index):
        hi = b.lo + len(b.ids)
        if hi <= start_row:
            continue
        cut = max(0, start_row - b.lo)
        yield b.lo + cut, b.ids[cut:], b.labels[cut:].astype(np.int64), b.distances[cut:]


def rows_stored(api: clusterstore.Store) -> dict[uuid.UUID, tuple[int, bool]]:
    """(assignments stored, completed) of each run the store holds."""
    return {r.run_id: (r.n_assignments, r.status == "completed") for r in api.runs()}


def writers(
    store: EventStore, runs: list[PlannedRun], stored: dict[uuid.UUID, tuple[int, bool]]
) -> Iterator[tuple[PlannedRun, Any, int]]:
    """Each planned run not yet completed, with its writer and the row to go on from."""
    for run in runs:
        if run.run_id in stored:
            if stored[run.run_id][1]:
                continue
            progress, writer = resume_run(store, run.run_id, batch_size=BATCH)
            yield run, writer, progress.rows_done
        else:
            writer = start_run(
                store,
                model=f"scale-{run.index % 5}",
                algorithm="synthetic",
                n_embeddings=run.n,
                dim=8,
                k=K,
                seed=run.index,
                run_id=run.run_id,
                batch_size=BATCH,
            )
            writer.record_centroids(np.zeros((K, 8), dtype=np.float32))
            yield run, writer, 0


@dataclass
class Step:
    events: int = 0
    append_s: float = 0.0
    append_cpu_s: float = 0.0
    append_peak_mb: float = 0.0


def scale(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    state: dict[str, Any] = done[-1] if done else {}
    if args.partitions:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "clusterstore",
                "--db",
                args.db,
                "init",
                "--partitions",
                str(args.partitions),
            ],
            check=True,
        )
    runs = plan(args.events, args.big)
    first_1m = runs[0]
    with clusterstore.open(args.db) as api:
        store = api.event_store
        api.catch_up()  # what an interrupted invocation appended: untimed, before step 1
        stored = rows_stored(api)
        total = sum(rows for rows, _ in stored.values())  # assignments in the log
        sizes = Sizes(args.db, state)
        sizes.resync()
        step = Step()
        reset_peak()
        t0, c0 = time.perf_counter(), cpu_s()
        for run, writer, start_row in writers(store, runs, stored):
            for lo, ids, labels, dist in run_batches(run, start_row):
                writer.record(ids, labels, dist, start_row=lo)
                step.events += len(ids)
                total += len(ids)
                if total % args.step == 0 or total >= args.events:
                    if writer.rows_done == run.n:
                        writer.complete()
                    step.append_s = time.perf_counter() - t0
                    step.append_cpu_s = cpu_s() - c0
                    step.append_peak_mb = peak_mb()
                    line = finish_step(api, args, sizes, step, total, first_1m)
                    with out.open("a") as f:
                        f.write(json.dumps(line) + "\n")
                    print(format_row(line), flush=True)
                    step = Step()
                    reset_peak()
                    t0, c0 = time.perf_counter(), cpu_s()
            if not writer.finished:
                writer.complete()
    print_table(out)


def finish_step(
    api: clusterstore.Store,
    args: argparse.Namespace,
    sizes: Sizes,
    step: Step,
    total: int,
    first_1m: PlannedRun,
) -> dict[str, Any]:
    sizes.after_append()
    reset_peak()
    t0, c0 = time.perf_counter(), cpu_s()
    api.catch_up()
    replay_s, replay_cpu = time.perf_counter() - t0, cpu_s() - c0
    replay_peak = peak_mb()
    sizes.after_catch_up()
    line: dict[str, Any] = {
        "events": total,
        "step_events": step.events,
        "append_per_s": step.events / step.append_s if step.append_s else None,
        "append_cpu_s": step.append_cpu_s,
        "append_peak_mb": step.append_peak_mb,
        "replay_per_s": step.events / replay_s if replay_s else None,
        "replay_cpu_s": replay_cpu,
        "replay_peak_mb": replay_peak,
        "log_bytes_per_event": sizes.log / total,
        "rm_bytes_per_event": sizes.read_model / total,
        "load_1m": os.getloadavg()[0],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **sizes.state(),
    }
    steps_done = total // args.step
    if args.audit and (
        steps_done % args.audit_every == 0 or total >= args.events or steps_done == 1
    ):
        line.update(audit(args.db, first_1m))
    return line


# ---------------------------------------------------------------------------- the table

COLUMNS = [
    ("events", "events", "{:,.0f}"),
    ("append_per_s", "append/s", "{:,.0f}"),
    ("replay_per_s", "replay/s", "{:,.0f}"),
    ("append_per_cpu_s", "append/CPU s", "{:,.0f}"),
    ("replay_per_cpu_s", "replay/CPU s", "{:,.0f}"),
    ("append_peak_mb", "append RSS MB", "{:,.0f}"),
    ("replay_peak_mb", "replay RSS MB", "{:,.0f}"),
    ("log_bytes_per_event", "log B/event", "{:.1f}"),
    ("rm_bytes_per_event", "read model B/event", "{:.1f}"),
    ("runs_list_s", "runs list s", "{:.2f}"),
    ("runs_show_s", "runs show s", "{:.2f}"),
    ("verify_s", "verify 1M s", "{:.2f}"),
    ("which_s", "which s", "{:.2f}"),
    ("export_s", "export 1M s", "{:.2f}"),
    ("load_1m", "load", "{:.1f}"),
]


def format_row(line: dict[str, Any]) -> str:
    line = {**line, **cpu_rates(line)}
    cells = []
    for key, _, fmt in COLUMNS:
        value = line.get(key)
        cells.append("-" if value is None else fmt.format(value))
    return "| " + " | ".join(cells) + " |"


def cpu_rates(line: dict[str, Any]) -> dict[str, float | None]:
    """Events per CPU second of this process (the client: on PostgreSQL most of the work is
    the server's, so there the wall rates are the figure; on a loaded machine these are
    the steadier one for SQLite)."""
    n = line.get("step_events") or 0
    return {
        f"{phase}_per_cpu_s": n / line[f"{phase}_cpu_s"] if line.get(f"{phase}_cpu_s") else None
        for phase in ("append", "replay")
    }


def print_table(out: Path) -> None:
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for line in out.read_text().splitlines():
        print(format_row(json.loads(line)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="SQLite path or postgresql:// URL of the store to grow")
    parser.add_argument("--events", type=int, default=120_000_000)
    parser.add_argument("--big", type=int, default=BIG, help="the big run's events")
    parser.add_argument("--step", type=int, default=STEP, help="events per reported step")
    parser.add_argument("--partitions", type=int, help="PostgreSQL: init --partitions N")
    parser.add_argument("--out", default="scale.jsonl", help="JSON lines, one per step")
    parser.add_argument("--no-audit", dest="audit", action="store_false")
    parser.add_argument(
        "--audit-every",
        type=int,
        default=1,
        help="time the audit commands every N steps (and after the first and the last)",
    )
    parser.add_argument("--table", action="store_true", help="only print --out as a table")
    args = parser.parse_args(argv)
    if args.table:
        print_table(Path(args.out))
        return
    if not args.db:
        parser.error("--db is required")
    scale(args)


if __name__ == "__main__":
    main()

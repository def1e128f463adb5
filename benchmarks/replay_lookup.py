"""What the lookup option costs replay: ``embeddingcluster`` rebuilt with it off and on.

    python -m clusterstore.benchmarks.replay_lookup                  # both backends, 1M
    python -m clusterstore.benchmarks.replay_lookup --backend sqlite --repeat 5

One log per backend (``replay.build_log``: 4 completed runs, k = 100), then ``--repeat``
rounds of two replays each, off then on, so both sides see the same load; each replay is
``projections.rebuild(store, ["embeddingcluster"])`` in a fresh spawned process
(``replay.replay``), timed in wall seconds and in the process's CPU seconds (user +
system, every thread): on SQLite the CPU seconds are the whole work (the database runs in
the process) and hardly move with the machine's load; on PostgreSQL the server does most
of it, so only the wall figures count there. With the option on a rebuild stores every row's id and
builds the two lookup indexes (by ``embedding_id`` and by ``id``) after the load
(``projections.lookup_index``). The option is written straight into ``pj_setting`` before
each replay (``set_lookup_index`` would rebuild once more itself). Reported: the median
events/s of each side (until readers see the new generation), and on/off per round, whose
median is the cost of the option; the same for CPU seconds (off/on, so that it reads as a
slowdown factor's inverse like the events/s ratio).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
from typing import Any

from sqlalchemy import delete

from clusterstore.benchmarks.replay import EVENTS, database_with_log, replay
from clusterstore.eventstore import EventStore
from clusterstore.projections import schema
from clusterstore.projections.runner import ensure_tables

SETTING = "embeddingcluster.lookup_index"  # ``lookup_index.SETTING`` (plain, so that this
# file also measures an older checkout, e.g. the option before it stored the ids)

REPEAT = 3


def set_option(db: str, on: bool) -> None:
    """The lookup option as the next rebuild reads it (no rebuild here)."""
    with EventStore.open(db) as store, store.connection() as conn:
        ensure_tables(store, conn)
        with store.transaction(write=True, conn=conn) as c:
            t = schema.settings
            c.execute(delete(t).where(t.c.name == SETTING))
            c.execute(t.insert().values(name=SETTING, value="on" if on else "off"))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(db: str, out: Any) -> None:
    start = _cpu_s()
    result = replay(db)
    out.put({**result, "cpu_s": _cpu_s() - start})


def replay_with_cpu(db: str) -> dict[str, float]:
    """``replay.replay`` in a fresh spawned process, with its CPU seconds."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(db, out))
    proc.start()
    try:
        result: dict[str, float] = out.get()
        return result
    finally:
        proc.join()


def measure(
    backend: str,
    *,
    events: int = EVENTS,
    repeat: int = REPEAT,
    pg_url: str | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with database_with_log(backend, events, pg_url=pg_url, directory=directory) as db:
        for _ in range(repeat):
            for option in (False, True):
                set_option(db, option)
                runs[option].append(replay_with_cpu(db))
    off, on = runs[False], runs[True]
    rates = [(a["events_per_s"], b["events_per_s"]) for a, b in zip(off, on, strict=True)]
    cpus = [(a["cpu_s"], b["cpu_s"]) for a, b in zip(off, on, strict=True)]
    return {
        "backend": backend,
        "events": events,
        "off_events_per_s": statistics.median(r["events_per_s"] for r in off),
        "on_events_per_s": statistics.median(r["events_per_s"] for r in on),
        "on_over_off": statistics.median(b / a for a, b in rates),
        "off_cpu_s": statistics.median(r["cpu_s"] for r in off),
        "on_cpu_s": statistics.median(r["cpu_s"] for r in on),
        "cpu_off_over_on": statistics.median(a / b for a, b in cpus),
        "off_runs": [r["events_per_s"] for r in off],
        "on_runs": [r["events_per_s"] for r in on],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--dir", default=None, help="SQLite: put the database file here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    results = [
        measure(b, events=args.events, repeat=args.repeat, pg_url=args.pg_url, directory=args.dir)
        for b in backends
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"{r['backend']:8} {r['events']:>11,} events  off {r['off_events_per_s']:>9,.0f}/s"
            f"  on {r['on_events_per_s']:>9,.0f}/s  on/off {r['on_over_off']:.2f} "
            f"(median of {len(r['on_runs'])} rounds)"
        )
        print(
            f"{'':8} {'':>11}  CPU  off {r['off_cpu_s']:>7.2f} s  on {r['on_cpu_s']:>7.2f} s"
            f"  off/on {r['cpu_off_over_on']:.2f}"
            + ("  (the server's CPU is not counted)" if r["backend"] == "postgres" else "")
        )


if __name__ == "__main__":
    main()

"""What the lookup option costs replay: ``embeddingcluster`` rebuilt with it off and on.

    python -m clusterstore.benchmarks.replay_lookup                  # both backends, 1M
    python -m clusterstore.benchmarks.replay_lookup --backend sqlite --repeat 5

One log per backend (``replay.build_log``: 4 completed runs, k = 100), then ``--repeat``
rounds of two replays each, off then on, so both sides see the same load; each replay is
``projections.rebuild(store, ["embeddingcluster"])`` in a fresh spawned process
(``replay.replay_in_child``). With the option on a rebuild stores every row's id and
builds the two lookup indexes (by ``embedding_id`` and by ``id``) after the load
(``projections.lookup_index``). The option is written straight into ``pj_setting`` before
each replay (``set_lookup_index`` would rebuild once more itself). Reported: the median
events/s of each side (until readers see the new generation), and on/off per round, whose
median is the cost of the option.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from sqlalchemy import delete

from clusterstore.benchmarks.replay import EVENTS, database_with_log, replay_in_child
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


def measure(
    backend: str,
    *,
    events: int = EVENTS,
    repeat: int = REPEAT,
    pg_url: str | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    off: list[float] = []
    on: list[float] = []
    with database_with_log(backend, events, pg_url=pg_url, directory=directory) as db:
        for _ in range(repeat):
            for option, rates in ((False, off), (True, on)):
                set_option(db, option)
                rates.append(replay_in_child(db)["events_per_s"])
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    return {
        "backend": backend,
        "events": events,
        "off_events_per_s": statistics.median(off),
        "on_events_per_s": statistics.median(on),
        "on_over_off": statistics.median(ratios),
        "off_runs": off,
        "on_runs": on,
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


if __name__ == "__main__":
    main()

"""Size and generation time of ``clusterstore report`` for a run of 1M assignments, k = 100.

    python -m clusterstore.benchmarks.report_1m [--events 1000000] [--dir /tmp]

Two completed runs of ``--events`` assignments each (``replay.build_log``, k = 100, random
ids and labels), then the report of the second: alone, and with ``--compare`` the first
(which also loads both runs' labels for ARI/NMI and the matching) and its model history.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from clusterstore.audit import write_report
from clusterstore.benchmarks.replay import build_log
from clusterstore.eventstore import EventStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="assignments per run")
    p.add_argument("--dir", help="put the database and reports here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        db = str(Path(d) / "report.db")
        build_log(db, 2 * args.events, runs=2)
        with EventStore.open(db) as store:
            first, second = (h.run_id for h in store.runs())
            for label, other in (("alone", None), ("with --compare", first)):
                out = Path(d) / f"report-{label.split()[-1]}.html"
                t0 = time.perf_counter()
                result = write_report(store, second, out, compare_to=other)
                took = time.perf_counter() - t0
                print(
                    f"{label:15} {result.n_bytes / 1024:8.1f} KiB  {took:6.1f} s  "
                    f"({os.path.getsize(out):,} bytes)"
                )


if __name__ == "__main__":
    main()

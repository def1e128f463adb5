"""One repetition of one step, in its own process (started by ``runner``):

    echo '{"target": "clusterstore.benchmarks.steps:append", "backend": "sqlite", "n": 1000,
           "db_url": "/tmp/x.db"}' | python -m clusterstore.benchmarks.child

The arguments come on stdin (or as the first argument), never on the runner's command
line: a PostgreSQL URL may hold a password, and argv is visible to every user (``ps``).

Prints one JSON line: ``{"ok": {events, seconds, cpu_seconds, note, peak_rss_mb, db_bytes}}`` or
``{"skipped": reason}``. Any other failure is a traceback on stderr and exit status 1.
A subprocess (not ``multiprocessing``) so the parent's ``__main__`` is never re-imported
and the peak RSS (``getrusage`` here) is this step's alone.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from . import databases
from .core import StepSkipped


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run(target: str, backend: str, n: int, db_url: str) -> dict[str, Any]:
    module, name = target.split(":")
    step = getattr(importlib.import_module(module), name)
    try:
        m = step(backend, n, db_url)
    except StepSkipped as e:
        return {"skipped": str(e)}
    return {
        "ok": {
            "events": m.events,
            "seconds": m.seconds,
            "cpu_seconds": m.cpu_seconds,
            "note": m.note,
            "peak_rss_mb": peak_rss_mb(),
            "db_bytes": databases.db_bytes(backend, db_url),
        }
    }


def main(argv: list[str]) -> None:
    args = json.loads(argv[0] if argv else sys.stdin.read())
    out = run(args["target"], args["backend"], args["n"], args["db_url"])
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Runs the steps: each repetition in a fresh child process, alternating against drift.

    report = run_bench(BenchConfig(n=1_000_000, backends=("sqlite", "postgres")))

Order: every (step, backend) pair once per round, and every other round in reverse order
(ABBA), so a slow drift of the machine's load hits every step alike. Each repetition runs
in a new Python process (``benchmarks.child``: peak RSS is the step's own, measured with
``getrusage`` in the child) on a new database: a file in a temporary directory, or a new
PostgreSQL schema dropped right after. The report is a plain dict (see ``run_bench``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterstore.eventstore.errors import DatabaseUnavailableError, EventStoreError

from . import databases
from .catalog import BACKENDS, GROUPS, RATIOS, STEPS, StepSpec
from .core import StepFailed, StepSkipped

__all__ = ["BACKENDS", "GROUPS", "RATIOS", "STEPS", "BenchConfig", "StepSpec", "run_bench"]


PACKAGES = ("sqlalchemy", "sqlmodel", "psycopg", "numpy", "msgspec", "uuid-utils", "faiss-cpu")

Progress = Callable[[str, bool], None]  # (text, finished): a line starts, then ends


@dataclass
class BenchConfig:
    n: int = 1_000_000
    backends: Sequence[str] = BACKENDS
    repeat: int = 3
    steps: Sequence[str] = tuple(STEPS)
    pg_url: str | None = None
    strict_backends: bool = False  # an unreachable PostgreSQL is an error, not a skip


@dataclass
class _Cell:
    """The measurements of one (step, backend) pair."""

    spec: StepSpec
    backend: str
    n: int
    rates: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_rates: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    db_mb: list[float] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None  # the step failed: the other steps still run
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the child

_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds benchmarks/


def _in_child(spec: StepSpec, backend: str, n: int, db_url: str) -> dict[str, Any]:
    """One repetition in a new interpreter (``benchmarks.child``); raises ``StepSkipped``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    args = {"target": spec.target, "backend": backend, "n": n, "db_url": db_url}
    proc = subprocess.run(
        [sys.executable, "-m", "clusterstore.benchmarks.child"],
        input=json.dumps(args),  # not in argv: the URL may hold a password
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise StepFailed(f"bench step {spec.name} on {backend} failed: {tail[0]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if "skipped" in out:
        raise StepSkipped(out["skipped"])
    return out["ok"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the parent


class _Databases:
    """A fresh database per repetition: SQLite files under one temporary directory,
    PostgreSQL schemas dropped right after use."""

    def __init__(self, workdir: Path, pg_url: str | None):
        self.workdir = workdir
        self.pg_base = databases.pg_base_url(pg_url)
        self._count = 0

    def run(self, cell: _Cell, job: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        self._count += 1
        if cell.backend == "sqlite":
            path = str(self.workdir / f"{cell.spec.name}-{self._count}.db")
            try:
                return job(path)
            finally:
                databases.remove_sqlite(path)
        url, schema = databases.create_pg_schema(self.pg_base)
        try:
            return job(url)
        finally:
            databases.drop_pg_schema(self.pg_base, schema)


def _plan(config: BenchConfig) -> list[_Cell]:
    cells = []
    for name in config.steps:
        spec = STEPS[name]
        n = min(config.n, spec.cap) if spec.cap else config.n
        if spec.fixed is not None:
            n = spec.fixed
        for backend in config.backends:
            cell = _Cell(spec, backend, n)
            missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
            if missing:
                names = " and ".join(missing)
                cell.skipped = f"{names} {'is' if len(missing) == 1 else 'are'} not installed"
            if spec.fixed is not None:
                cell.notes.append(f"fixed n {n:,}: {spec.fixed_why}; --n does not apply")
            elif n < config.n:
                why = f" ({spec.cap_why})" if spec.cap_why else ""
                cell.notes.append(f"n capped at {n:,} of {config.n:,}{why}; not extrapolated")
            cells.append(cell)
    return cells


def _check_postgres(config: BenchConfig, cells: list[_Cell]) -> str | None:
    if "postgres" not in config.backends:
        return None
    why = databases.pg_check(databases.pg_base_url(config.pg_url))
    if why and config.strict_backends:
        raise DatabaseUnavailableError(why)
    for cell in cells:
        if why and cell.backend == "postgres" and cell.skipped is None:
            cell.skipped = why
    return why


def _measure(cell: _Cell, dbs: _Databases) -> str:
    """One repetition; returns the progress text for it."""
    try:
        out = dbs.run(cell, lambda url: _in_child(cell.spec, cell.backend, cell.n, url))
    except StepSkipped as e:
        cell.skipped = str(e)
        return f"skipped: {e}"
    except StepFailed as e:  # reported in the result; the other steps' figures are kept
        cell.error = str(e)
        return f"failed: {e}"
    rate = out["events"] / out["seconds"] if out["seconds"] > 0 else float("inf")
    cell.rates.append(rate)
    cell.seconds.append(out["seconds"])
    if out["cpu_seconds"]:
        cell.cpu_rates.append(out["events"] / out["cpu_seconds"])
    if out["peak_rss_mb"] is not None:
        cell.rss_mb.append(out["peak_rss_mb"])
    cell.db_mb.append(out["db_bytes"] / 1e6)
    if out["note"] and out["note"] not in cell.notes:
        cell.notes.append(out["note"])
    return f"{rate:,.0f} events/s ({out['seconds']:.2f} s)"


def run_bench(config: BenchConfig, on_progress: Progress | None = None) -> dict[str, Any]:
    """Measure every step on every backend ``config.repeat`` times; returns the report:
    ``{"results": [...], "ratios": {backend: {...}}, "machine": {...}, ...}``."""
    unknown = sorted(set(config.steps) - set(STEPS))
    if unknown:
        raise EventStoreError(f"unknown bench steps {unknown}; known: {', '.join(STEPS)}")
    load_before = _load()
    cells = _plan(config)
    pg_skip = _check_postgres(config, cells)
    say = on_progress or (lambda _text, _done: None)
    total = config.repeat * len(cells)
    done = 0
    with tempfile.TemporaryDirectory(prefix="clusterstore-bench-") as tmp:
        dbs = _Databases(Path(tmp), config.pg_url)
        for rep in range(config.repeat):
            for cell in cells if rep % 2 == 0 else cells[::-1]:
                done += 1
                if cell.skipped is not None or cell.error is not None:
                    continue
                say(
                    f"[{done}/{total}] {cell.backend} {cell.spec.name} rep {rep + 1}/"
                    f"{config.repeat} n={cell.n:,}: ",
                    False,
                )
                say(_measure(cell, dbs), True)
    return {
        "n_events": config.n,
        "n_repeats": config.repeat,
        "backends": list(config.backends),
        "results": [_result(c) for c in cells],
        "ratios": _ratios(cells, config.backends),
        # the same on CPU time; SQLite only (on PostgreSQL the server's CPU is not counted)
        "cpu_ratios": _ratios(cells, [b for b in config.backends if b == "sqlite"], cpu=True),
        "steps": {name: STEPS[name].summary for name in config.steps},
        "machine": _machine(config, pg_skip is None, load_before),
    }


# ------------------------------------------------------------------ the report


def _spread(rates: list[float], digits: int = 1) -> dict[str, float] | None:
    if not rates:
        return None
    return {
        "median": round(statistics.median(rates), digits),
        "min": round(min(rates), digits),
        "max": round(max(rates), digits),
    }


def _result(cell: _Cell) -> dict[str, Any]:
    return {
        "name": cell.spec.name,
        "backend": cell.backend,
        "n_events": cell.n,
        "n_repetitions": len(cell.rates),
        "events_per_s": _spread(cell.rates),
        "step_seconds": _spread(cell.seconds, 3),  # seconds on the clock, per repetition
        # events per second of the step process's CPU time: less disturbed by a busy
        # machine; all of the work on SQLite, the client's share only on PostgreSQL
        "events_per_cpu_s": _spread(cell.cpu_rates),
        "peak_rss_mb": round(max(cell.rss_mb), 1) if cell.rss_mb else None,
        "db_mb": round(max(cell.db_mb), 2) if cell.db_mb else None,
        "skipped": cell.skipped,
        "error": cell.error,
        "note": "; ".join(cell.notes) or None,
    }


def _ratios(
    cells: list[_Cell], backends: Sequence[str], *, cpu: bool = False
) -> dict[str, dict[str, float | None]]:
    medians = {
        (c.spec.name, c.backend): statistics.median(c.cpu_rates if cpu else c.rates)
        for c in cells
        if (c.cpu_rates if cpu else c.rates) and c.skipped is None and c.error is None
    }
    out: dict[str, dict[str, float | None]] = {}
    for backend in backends:
        out[backend] = {}
        for ratio, (top, bottom) in RATIOS.items():
            a, b = medians.get((top, backend)), medians.get((bottom, backend))
            out[backend][ratio] = round(a / b, 2) if a and b else None
    return out


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _machine(config: BenchConfig, pg_ok: bool, load_before: list[float] | None) -> dict[str, Any]:
    from clusterstore.eventstore import __version__

    pg_version = None
    if "postgres" in config.backends and pg_ok:
        pg_version = databases.pg_server_version(databases.pg_base_url(config.pg_url))
    return {
        "n_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": pg_version,
        "packages": {"clusterstore": __version__} | {p: _version(p) for p in PACKAGES},
        "load_avg_before": load_before,
        "load_avg_after": _load(),
    }

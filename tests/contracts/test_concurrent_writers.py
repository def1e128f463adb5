"""Several writer processes at once, with a reader tailing the global feed.

Writers (``log_writer.py``, one process per run) append concurrently; some transactions
are rolled back deliberately after their position was allocated, some are held open
before and after the allocation. The reader follows ``read_all(after=checkpoint)`` in a
tight loop the whole time. At the end it must have seen every committed event exactly
once, at dense positions, each run in seq order, and nothing that was rolled back. On
PostgreSQL this is the never-skip guarantee (sequences commit out of order); on SQLite it
also shows that concurrent writers wait for each other instead of failing with
``database is locked``. The writers and the reader open the brand-new database at the same
moment, so creating the store concurrently is covered too.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clusterstore.eventstore import EventStore, StoredEvent
from tests.conftest import family, fresh_database

WRITERS = {"sqlite": 2, "postgres": 4}
BATCHES = 20
TIMEOUT = 120


def start_writers(
    argv: list[list[str]], env: dict[str, str], go: Path
) -> list[subprocess.Popen[str]]:
    env = {**env, "LOG_WRITER_GO": str(go)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.contracts.log_writer", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in argv
    ]
    for p in procs:  # every writer has imported and opened: start them together
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line == "ready\n", (line, p.stderr.read() if p.stderr else "")
    go.touch()
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert "locked" not in err and "Busy" not in err, err
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def tail(store: EventStore, after: int, procs: list[subprocess.Popen[str]]) -> list[StoredEvent]:
    """Follow the feed until every writer has exited, then drain it once more."""
    seen: list[StoredEvent] = []
    checkpoint = after
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        running = any(p.poll() is None for p in procs)
        for ev in store.feed(after=checkpoint):
            seen.append(ev)
            checkpoint = ev.position or 0
        if not running:
            return seen
        time.sleep(0.001)
    raise AssertionError("writers did not finish in time")


def test_concurrent_writers_and_a_tailing_reader(
    backend: str, db_url: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    runs = [uuid.uuid4() for _ in range(WRITERS[family(backend)])]
    procs = start_writers(
        [[db_url, str(run), str(seed), str(BATCHES)] for seed, run in enumerate(runs)],
        subprocess_env,
        tmp_path / "go",
    )
    try:
        # the writers and the reader all open the new, empty database at the same moment
        with EventStore.open(db_url) as store:
            seen = tail(store, 0, procs)
            reports = finish(procs)
            check(store, runs, reports, seen)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def check(
    store: EventStore, runs: list[uuid.UUID], reports: list[dict[str, Any]], seen: list[StoredEvent]
) -> None:
    # the reader's view: dense positions, no event twice, each run in seq order
    assert [ev.position for ev in seen] == list(range(1, len(seen) + 1))
    keys = [(ev.run_id, ev.seq) for ev in seen]
    assert len(set(keys)) == len(keys)
    by_run: dict[uuid.UUID, list[StoredEvent]] = defaultdict(list)
    for ev in seen:
        by_run[ev.run_id].append(ev)
    assert set(by_run) <= set(runs)
    # exactly what each writer committed, and nothing it rolled back
    rolled_back = 0
    for run, report in zip(runs, reports, strict=True):
        events = by_run[run]
        assert [ev.seq for ev in events] == list(range(1, len(events) + 1))
        for first_seq, count, sha in report["committed"]:
            chunk = events[first_seq - 1 : first_seq - 1 + count]
            got = hashlib.sha256(b"".join(ev.payload for ev in chunk)).hexdigest()
            assert (chunk[0].seq, len(chunk), got) == (first_seq, count, sha)
        assert sum(c for _, c, _ in report["committed"]) == len(events) == store.head(run)
        rolled_back += len(report["rolled_back"])
    assert store.max_position() == len(seen)
    # the feed read afterwards in one go agrees with what the tailing reader saw
    assert [(ev.position, ev.run_id, ev.seq) for ev in store.feed()] == [
        (ev.position, ev.run_id, ev.seq) for ev in seen
    ]
    assert rolled_back > 0  # the scenario really rolled transactions back


def fresh_databases(backend: str, db_url: str, tmp_path: Path, n: int) -> Iterator[str]:
    """``db_url`` and n - 1 more empty databases of the same backend."""
    yield db_url
    for i in range(1, n):
        directory = tmp_path / f"fresh{i}"
        directory.mkdir()
        with fresh_database(backend, directory) as url:
            yield url


def test_concurrent_first_open_creates_the_store_once(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    """Several openers (threads with engines of their own) racing to create a new store."""

    def open_close(url: str) -> int:
        with EventStore.open(url) as store:
            return store.max_position()

    with ThreadPoolExecutor(6) as pool:
        for url in fresh_databases(backend, db_url, tmp_path, 4):
            assert list(pool.map(open_close, [url] * 6)) == [0] * 6

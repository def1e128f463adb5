"""Per-run reads use the keys, whatever else the store holds.

Every statement that ``runs show``, ``runs verify`` (with the read-model check), ``export``,
``runs compare``, ``labels`` and ``runs list`` send to the database is captured, and its
query plan asked for with the same parameters: wherever it reads the log (``cs_events``,
keyed (run_id, seq)) or the ``embeddingcluster`` read model's tables (keyed (run_key, seq)
and by run id), the plan must be an index search, never a scan of the table. A read that
went through the ``embeddingcluster`` view filtered on ``run_id`` scanned every projected
assignment of every run: ``runs show`` took 37 s at 3M events and 167 s at 100M.

PostgreSQL plans with ``enable_seqscan`` off: on tables this small a scan is the cheaper
plan, and what is asserted is that the key *can* serve the read (a read it cannot serve is
still planned as a scan). The small per-run and per-commit tables (``cs_commits``,
``cs_runs``, checkpoints) are not asserted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import event, text

from clusterstore import audit, projections
from clusterstore.cli.runs_audit import READ_MODEL_CHECK
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import start_run

# the tables whose size grows with the runs in the store (and the views over them)
KEYED = re.compile(r"\b(cs_events|pj_ec_assignment_g\d+|pj_ec_run_g\d+|pj_ec_cluster_g\d+)\b")
VIEWS = re.compile(r"\b(embeddingcluster|clustersize)\b")
VIEW_ALIASES = {"a", "r", "c"}  # the views' names for those tables (projections' SQL)
ALIAS = re.compile(
    r"\b(?:cs_events|pj_ec_\w+_g\d+)\b(?:\s+AS)?\s+(?!ON\b|WHERE\b|JOIN\b)(\w+)", re.I
)

Statement = tuple[str, Any]


def _record(store: EventStore, n: int, seed: int) -> UUID:
    rng = np.random.default_rng(seed)
    ids = np.random.default_rng(0).integers(0, 256, (n, 16), dtype=np.uint8)
    with start_run(store, model="m", algorithm="kmeans-l2", n_embeddings=n, dim=2, k=4) as run:
        run.record_centroids(rng.random((4, 2)))
        run.record(ids, rng.integers(0, 4, n), rng.random(n).astype(np.float32))
    return run.run_id


@contextmanager
def _captured(store: EventStore) -> Iterator[list[Statement]]:
    """The statements sent while the block runs, with their parameters."""
    seen: list[Statement] = []
    engine = store.recorder.engine

    def on_execute(conn: Any, cursor: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        if not many:
            seen.append((sql, params))

    fetch_all = store.recorder.fetch_all

    def capture_fetch(conn: Any, sql: str, params: dict[str, Any]) -> list[Any]:
        if store.backend != "sqlite":  # there it is executed by SQLAlchemy: seen above
            seen.append((f"-- text\n{sql}", params))
        return fetch_all(conn, sql, params)

    event.listen(engine, "before_cursor_execute", on_execute)
    store.recorder.fetch_all = capture_fetch  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        del store.recorder.fetch_all


def _plan(store: EventStore, sql: str, params: Any) -> list[str]:
    with store.recorder.engine.connect() as conn:
        if sql.startswith("-- text\n"):
            compiled = text(sql.removeprefix("-- text\n")).compile(dialect=conn.dialect)
            sql, params = compiled.string, compiled.construct_params(params)
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        try:
            if store.backend == "sqlite":
                cur.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                return [str(row[-1]) for row in cur.fetchall()]
            cur.execute("SET enable_seqscan = off")
            cur.execute(f"EXPLAIN {sql}", params)
            return [str(row[0]) for row in cur.fetchall()]
        finally:
            cur.close()
            conn.rollback()


def _scans(store: EventStore, statements: list[Statement]) -> list[str]:
    """Every plan line that reads a keyed table without its index, with its statement."""
    bad = []
    for sql, params in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH", "-- TEXT")):
            continue
        if not KEYED.search(sql) and not VIEWS.search(sql):
            continue
        # SQLite's plan names a table by its alias in the statement
        names = {m.group(1) for m in KEYED.finditer(sql)} | set(ALIAS.findall(sql))
        if VIEWS.search(sql):
            names |= VIEW_ALIASES
        plan = _plan(store, sql, params)
        for i, line in enumerate(plan):
            if store.backend == "sqlite":
                found = re.match(r"SCAN (\w+)", line.lstrip("-| `"))
                scanned = found is not None and found.group(1) in names
            else:
                scanned = KEYED.search(line) is not None and _pg_scan(line, plan[i + 1 :])
            if scanned:
                bad.append(f"{line.strip()}  <-  {' '.join(sql.split())[:300]}")
    return bad


def _pg_scan(node: str, rest: list[str]) -> bool:
    """Whether a PostgreSQL plan node reads its whole table: a Seq Scan, or an index scan
    without an index condition (every entry of the index, in order)."""
    if "Seq Scan" in node:
        return True
    if "Index Scan" not in node and "Index Only Scan" not in node:
        return False
    details = []
    for line in rest:
        if "->" in line:
            break
        details.append(line)
    return not any("Index Cond" in d for d in details)


def test_per_run_reads_are_index_searches(store: EventStore, tmp_path: Path) -> None:
    run = _record(store, 300, 1)
    other = _record(store, 200, 2)
    projections.catch_up_all(store)
    with _captured(store) as statements:
        assert audit.verify_run(store, run, read_model=READ_MODEL_CHECK).ok
        audit.run_details(store, run, read_model=READ_MODEL_CHECK, verify=False)
        audit.export_run(store, run, tmp_path / "run.npy")
        audit.compare_runs(store, run, other)
        audit.run_labels(store, run)
        audit.list_runs(store)
    assert any("cs_events" in sql for sql, _ in statements)
    assert any("pj_ec_assignment" in sql for sql, _ in statements)
    assert _scans(store, statements) == []


def test_the_check_finds_a_scan(store: EventStore) -> None:
    """The assertion above can fail: a read through the view filtered on run_id is found."""
    run = _record(store, 50, 1)
    projections.catch_up_all(store)
    with _captured(store) as statements, store.transaction() as conn:
        conn.execute(
            text("SELECT count(*) FROM embeddingcluster WHERE seq + 0 > 0 AND run_id IS NOT NULL")
        )
    assert run is not None
    assert _scans(store, statements) != []

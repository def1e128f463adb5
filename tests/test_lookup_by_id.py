"""Plain SQL ``SELECT ... FROM embeddingcluster WHERE id = ?`` (the legacy primary key) is
an index lookup once the lookup option is on, with the same answers as without it, for
runs made here (derived ids) and imported runs (their legacy row ids), on both backends."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text

from clusterstore import projections
from clusterstore.eventstore import DatabaseBusyError, EventStore, RunCompleted
from clusterstore.legacy import LegacySource, import_legacy
from clusterstore.projections.embeddingcluster import EmbeddingClusterProjection
from clusterstore.projections.lookup_index import id_index_name, lookup_index_enabled
from clusterstore.projections.runner import Runner
from tests.pj_util import make_run, query
from tests.test_projections_legacy import build_legacy

BY_ID = "SELECT * FROM embeddingcluster WHERE id = :v"
ALL = "SELECT * FROM embeddingcluster ORDER BY run_id, seq"


@pytest.fixture
def mixed(store: EventStore, tmp_path: Path) -> EventStore:
    """Two completed runs, a running one (invisible) and an imported legacy run."""
    make_run(store, 40, seed=1)
    make_run(store, 25, seed=2, k=4)
    make_run(store, 12, seed=3, recorded=5)  # running: not in the view
    build_legacy(tmp_path / "legacy.db")
    with LegacySource(tmp_path / "legacy.db") as source:
        import_legacy(source, store)
    projections.catch_up_all(store)
    return store


def plan(store: EventStore, sql: str, value: object) -> str:
    """The query plan, on a new connection (a pooled SQLite connection keeps statements
    prepared against the old schema). PostgreSQL: sequential scans are priced out, as the
    tables are tiny and only whether an index can serve the predicate counts."""
    store.recorder.engine.dispose()
    with store.recorder.engine.connect() as conn:
        if store.backend == "sqlite":
            rows = conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"), {"v": value}).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.execute(text("SET enable_seqscan = off"))
        rows = conn.execute(text(f"EXPLAIN {sql}"), {"v": value}).all()
        return "\n".join(str(r[0]) for r in rows)


def uses_id_index(store: EventStore, value: object) -> bool:
    found = plan(store, BY_ID, value)
    generation = _generation(store)
    if store.backend == "sqlite":
        return f"USING INDEX {id_index_name(generation)}" in found
    name = id_index_name(generation)
    # partitioned by run, each partition's own index serves it (PostgreSQL names those)
    on_partition = re.search(rf"{name.removesuffix('_id')}_p\d+_legacy_id_idx", found)
    return (
        name in found or on_partition is not None
    ) and "Seq Scan on pj_ec_assignment" not in found


def rows_of(store: EventStore, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows, NaN distances (an imported run's unknown ones) made comparable."""
    return [
        tuple("NaN" if isinstance(x, float) and math.isnan(x) else x for x in row)
        for row in query(store, sql, **params)
    ]


def answers(store: EventStore, values: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {str(v): rows_of(store, BY_ID, v=v) for v in values}


def _generation(store: EventStore) -> int:
    rows = query(store, "SELECT generation FROM pj_checkpoint WHERE name = 'embeddingcluster'")
    return int(rows[0][0])


def sample_ids(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Ids from every run in the view (first, middle and last row of each), as it shows
    them (CHAR(32) hex on SQLite, uuid on PostgreSQL)."""
    by_run: dict[Any, list[Any]] = {}
    for row in rows:
        by_run.setdefault(row[4], []).append(row[0])
    return [ids[i] for ids in by_run.values() for i in (0, len(ids) // 2, -1)]


def test_the_id_lookup_is_an_index_search_with_the_scans_answers(mixed: EventStore) -> None:
    store = mixed
    before = rows_of(store, ALL)
    assert len({r[4] for r in before}) == 3  # two made here, one imported
    values = [*sample_ids(before), UUID(int=7).hex if store.backend == "sqlite" else UUID(int=7)]
    assert not uses_id_index(store, values[0])  # off by default: a scan
    off = answers(store, values)
    assert all(len(rows) == 1 for rows in list(off.values())[:-1])
    assert off[str(values[-1])] == []

    projections.set_lookup_index(store, True)
    assert uses_id_index(store, values[0])
    assert rows_of(store, ALL) == before  # same ids, same values
    assert answers(store, values) == off
    imported = [r for r in before if r[4] != r[2] or r[0] != _derived(r)]
    assert imported and all(rows_of(store, BY_ID, v=r[0]) == [r] for r in imported[:3])

    # the stored ids leave the digests as they were (the read model still agrees)
    for run in {UUID(str(r[4])) for r in before}:
        done = [e for _, e in store.read(run) if isinstance(e, RunCompleted)]
        count = sum(1 for r in before if UUID(str(r[4])) == run)
        assert projections.read_model_digest(store, run) == (count, done[0].digest)

    # a run caught up incrementally stores its ids too
    new = make_run(store, 9, seed=4)
    projections.catch_up_all(store)
    row = rows_of(store, BY_ID, v=_view_value(store, projections.assignment_id(new, 5)))
    assert [(UUID(str(r[4])), r[5]) for r in row] == [(new, 5)]
    assert uses_id_index(store, values[0])
    with_new = rows_of(store, ALL)

    # a rebuild keeps the choice
    projections.rebuild(store, ["embeddingcluster"])
    assert uses_id_index(store, values[0])
    assert rows_of(store, ALL) == with_new

    projections.set_lookup_index(store, False)
    assert not uses_id_index(store, values[0])
    assert rows_of(store, ALL) == with_new
    assert answers(store, values) == off

    # on again: the rows caught up while off do not store their ids, so it rebuilds
    make_run(store, 6, seed=5)
    projections.catch_up_all(store)
    projections.set_lookup_index(store, True)
    assert uses_id_index(store, values[0])
    assert answers(store, values) == off
    assert len(rows_of(store, ALL)) == len(with_new) + 6


def test_switching_is_refused_while_another_runner_holds_the_read_model(
    mixed: EventStore,
) -> None:
    with mixed.connection() as conn:
        runner = Runner(mixed, EmbeddingClusterProjection(mixed), conn)
        assert runner.lock.try_acquire()
        try:
            with pytest.raises(DatabaseBusyError, match="already being updated"):
                projections.set_lookup_index(mixed, True)
        finally:
            runner.lock.release()
    with mixed.transaction() as c:
        assert not lookup_index_enabled(c)  # nothing changed
    assert not uses_id_index(mixed, rows_of(mixed, ALL)[0][0])


def _view_value(store: EventStore, value: UUID) -> object:
    return value.hex if store.backend == "sqlite" else value


def _derived(row: tuple[Any, ...]) -> object:
    """The id (run, seq) gives a row of a run made here, as the view shows it."""
    derived = projections.assignment_id(UUID(str(row[4])), int(row[5]))
    return derived.hex if isinstance(row[0], str) else derived

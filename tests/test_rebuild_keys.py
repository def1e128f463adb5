"""A rebuild may load the assignment table before creating its primary key (PostgreSQL:
``primary_key_after_load``); the table readers get has the same key as one built row by
row, and a row applied twice still fails the rebuild, leaving the old read model. Where
a rebuild runs in one transaction (PostgreSQL: ``rebuild_in_one_transaction``) the new
generation is loaded frozen, and a failed rebuild leaves none of it behind."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from clusterstore import projections
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.errors import EventStoreError
from clusterstore.projections.base import current_generation
from clusterstore.projections.embeddingcluster import EmbeddingClusterProjection
from clusterstore.projections.schema import ec_tables

from .pj_util import make_run, physical_tables, query, snapshot


def _key(store: EventStore) -> tuple[str | None, list[str]]:
    with store.transaction() as conn:
        generation = current_generation(conn, "embeddingcluster")
        assert generation is not None
        pk = inspect(conn).get_pk_constraint(ec_tables(generation).assignments.name)
    return pk["name"], pk["constrained_columns"]


def test_a_rebuilt_assignment_table_has_its_primary_key(store: EventStore) -> None:
    make_run(store, 25, seed=1)
    make_run(store, 9, seed=2)
    projections.catch_up_all(store)
    before = snapshot(store)
    name, columns = _key(store)
    assert columns == ["run_key", "seq"]
    projections.rebuild(store, batch_events=4)
    assert snapshot(store) == before
    rebuilt_name, rebuilt_columns = _key(store)
    assert rebuilt_columns == columns
    assert rebuilt_name == name.replace("_g1_", "_g2_")  # type: ignore[union-attr]
    make_run(store, 5, seed=3)  # catch-up after the rebuild loads into the keyed table
    projections.catch_up_all(store)
    projections.rebuild(store)
    assert snapshot(store) != before


def test_a_batch_applied_twice_fails_the_rebuild(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(store, 20, seed=4)
    projections.catch_up_all(store)
    before = snapshot(store)
    apply = EmbeddingClusterProjection.apply

    def twice(self, conn, generation, blocks):  # type: ignore[no-untyped-def]
        apply(self, conn, generation, blocks)
        self.store.insert_assignment_rows(
            conn,
            ec_tables(generation).assignments,
            _rows_of(self, conn, generation, blocks),
        )

    monkeypatch.setattr(EmbeddingClusterProjection, "apply", twice)
    with pytest.raises(EventStoreError) as caught:
        projections.rebuild(store, ["embeddingcluster"])
    assert "duplicate" in str(caught.value).lower() or "unique" in str(caught.value).lower()
    monkeypatch.undo()
    assert snapshot(store) == before  # readers still see the old generation


def _rows_of(projection, conn, generation, blocks):  # type: ignore[no-untyped-def]
    from clusterstore.eventstore.rows import AssignmentRows
    from clusterstore.projections.embeddingcluster import _block_rows

    keys = projection._run_keys(conn, ec_tables(generation), blocks)
    parts = [_block_rows(keys[b.run_id], b) for b in blocks if b.n_assignments]
    return AssignmentRows.concat(parts)


def test_a_rebuild_in_one_transaction_loads_the_assignment_table_frozen(
    store: EventStore,
) -> None:
    if not store.rebuild_in_one_transaction:
        pytest.skip("this backend rebuilds with a transaction per batch")
    make_run(store, 3000, seed=5)
    projections.catch_up_all(store)
    before = snapshot(store)
    projections.rebuild(store, ["embeddingcluster"], batch_events=700)
    assert snapshot(store) == before
    with store.transaction() as conn:
        table = ec_tables(current_generation(conn, "embeddingcluster") or 0).assignments.name
    # the ANALYZE before the swap counted the visibility map: every page all-visible (COPY
    # FREEZE) where the table is not partitioned (a partitioned table cannot be frozen)
    parts = store.partitions()
    names = [table] if parts is None else [f"{table}_p{i}" for i in range(parts)]
    pages = query(
        store,
        "SELECT sum(relpages), sum(relallvisible) FROM pg_class WHERE relname = ANY(:names) "
        "AND relnamespace = current_schema()::regnamespace",
        names=names,
    )
    total, visible = (int(x) for x in pages[0])
    assert total > 0
    assert visible == (total if parts is None else 0)


def test_a_failed_rebuild_in_one_transaction_leaves_no_new_generation(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not store.rebuild_in_one_transaction:
        pytest.skip("this backend rebuilds with a transaction per batch")
    make_run(store, 50, seed=6)
    projections.catch_up_all(store)
    tables = physical_tables(store)

    def fails(self, conn, generation):  # type: ignore[no-untyped-def]
        raise EventStoreError("the key build failed")

    monkeypatch.setattr(EmbeddingClusterProjection, "create_indexes", fails)
    with pytest.raises(EventStoreError, match="the key build failed"):
        projections.rebuild(store, ["embeddingcluster"], batch_events=20)
    assert physical_tables(store) == tables

"""The database itself refuses to change the log: raw SQL through the store's own
transaction helper must raise ``ImmutableLogError`` and leave every row as it was."""

from __future__ import annotations

import uuid

import pytest

from clusterstore.eventstore import EventStore, ImmutableLogError
from tests.contracts.support import assignments, snapshot, started

TABLES = ("cs_events", "cs_commits", "cs_runs")
CHANGES = {
    "cs_events": [
        ("UPDATE", "UPDATE cs_events SET type = 5"),
        ("UPDATE", "UPDATE cs_events SET seq = seq + 100 WHERE seq = 1"),
        ("DELETE", "DELETE FROM cs_events WHERE seq > 3"),
        ("DELETE", "DELETE FROM cs_events"),
    ],
    "cs_commits": [
        ("UPDATE", "UPDATE cs_commits SET count = count + 1"),
        ("DELETE", "DELETE FROM cs_commits WHERE position > 1"),
        ("DELETE", "DELETE FROM cs_commits"),
    ],
    "cs_runs": [
        ("UPDATE", "UPDATE cs_runs SET created_at = created_at"),
        ("DELETE", "DELETE FROM cs_runs"),
    ],
}
# Ways to overwrite a stored row by inserting over it (an UPDATE or DELETE in disguise).
OVERWRITES = {
    "sqlite": [
        (
            "cs_events",
            "DELETE",
            "INSERT OR REPLACE INTO cs_events (run_id, seq, type, version, payload) "
            "SELECT run_id, seq, type, version, x'00' FROM cs_events",
        ),
        (
            "cs_events",
            "DELETE",
            "REPLACE INTO cs_events SELECT run_id, seq, 5, version, payload FROM cs_events",
        ),
        (
            "cs_commits",
            "DELETE",
            "INSERT OR REPLACE INTO cs_commits "
            "SELECT position, run_id, first_seq, 1, committed_at FROM cs_commits",
        ),
        ("cs_runs", "DELETE", "INSERT OR REPLACE INTO cs_runs SELECT run_id, 0 FROM cs_runs"),
        (
            "cs_events",
            "UPDATE",
            "INSERT INTO cs_events SELECT * FROM cs_events WHERE true "
            "ON CONFLICT (run_id, seq) DO UPDATE SET payload = x'00'",
        ),
    ],
    "postgresql": [
        (
            "cs_events",
            "UPDATE",
            "INSERT INTO cs_events SELECT * FROM cs_events "
            "ON CONFLICT (run_id, seq) DO UPDATE SET payload = '\\x00'::bytea",
        ),
        (
            "cs_commits",
            "UPDATE",
            "INSERT INTO cs_commits SELECT * FROM cs_commits "
            "ON CONFLICT (position) DO UPDATE SET count = 1",
        ),
        (
            "cs_runs",
            "UPDATE",
            "INSERT INTO cs_runs SELECT * FROM cs_runs "
            "ON CONFLICT (run_id) DO UPDATE SET created_at = now()",
        ),
    ],
}


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    for n in (3, 8):
        run = uuid.uuid4()
        store.append(run, [started(n)], expected_seq=0)
        store.append(run, assignments(n, seed=n).packed(), expected_seq=1)
    return store


def refused(store: EventStore, sql: str) -> ImmutableLogError:
    with pytest.raises(ImmutableLogError) as info, store.recorder.transaction(write=True) as conn:
        conn.exec_driver_sql(sql)
    return info.value


def message(table: str, op: str) -> str:
    return f"clusterstore: {table} is append-only; {op} is not allowed"


@pytest.mark.parametrize("table", TABLES)
def test_update_and_delete_are_rejected(filled: EventStore, table: str) -> None:
    before = snapshot(filled)
    for op, sql in CHANGES[table]:
        assert str(refused(filled, sql)) == message(table, op)
    assert snapshot(filled) == before


def test_overwriting_inserts_are_rejected(filled: EventStore) -> None:
    before = snapshot(filled)
    for table, op, sql in OVERWRITES[filled.backend]:
        assert str(refused(filled, sql)) == message(table, op), sql
    assert snapshot(filled) == before


@pytest.mark.postgres_only
@pytest.mark.parametrize("table", TABLES)
def test_truncate_is_rejected(filled: EventStore, table: str) -> None:
    before = snapshot(filled)
    assert str(refused(filled, f"TRUNCATE {table}")) == message(table, "TRUNCATE")
    assert str(refused(filled, f"TRUNCATE {table} CASCADE")) == message(table, "TRUNCATE")
    assert snapshot(filled) == before


@pytest.mark.postgres_only
def test_truncate_of_all_log_tables_at_once_is_rejected(filled: EventStore) -> None:
    before = snapshot(filled)
    error = refused(filled, "TRUNCATE cs_events, cs_commits, cs_runs")
    assert str(error) in {message(t, "TRUNCATE") for t in TABLES}
    assert snapshot(filled) == before


def test_the_store_keeps_working_after_a_refusal(filled: EventStore) -> None:
    refused(filled, "DELETE FROM cs_events")
    run = uuid.uuid4()
    pos = filled.max_position()
    result = filled.append(run, [started()], expected_seq=0)
    assert (result.head, result.position) == (1, pos + 1)
    # inserting new rows is what the log is for: allowed through the same helper
    with filled.recorder.transaction(write=True) as conn:
        conn.exec_driver_sql("SELECT 1")

"""``runs verify`` checks the read models against the log, not only the assignment digest
(issue 16): each change made around the store to ``clusteringresult`` (model, status, k,
counts, id), to ``embeddingcluster``'s run rows (the completed flag, result_id) and cluster
sizes, or a deleted read-model row, is a finding naming the run and the column, with
``projections rebuild`` as the repair; after the rebuild verify is clean again. A
checkpoint moved past the log's head is ``ahead_of_log`` in ``projections status``, never
"up to date". A run the read models skip from a damaged event on (a dead letter) is named at
that seq with the supported repair."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection, delete, update

from clusterstore.eventstore import EventStore
from clusterstore.projections import schema as pj_schema
from clusterstore.projections.base import current_generation
from clusterstore.projections.schema import cr_tables, ec_tables
from tests.audit_data import drop_triggers, set_payload, stored_payload
from tests.test_bad_input import invoke
from tests.test_cli_cluster import blobs

OTHER = uuid.UUID(int=1)
REPAIR = "`clusterstore projections rebuild` rebuilds the read models from the log"


def cr(conn: Connection) -> Any:
    generation = current_generation(conn, "clusteringresult")
    assert generation is not None
    return cr_tables(generation).results


def ec(conn: Connection) -> Any:
    generation = current_generation(conn, "embeddingcluster")
    assert generation is not None
    return ec_tables(generation)


def set_cr(column: str, value: Any) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        t = cr(conn)
        conn.execute(update(t).values({column: value}))

    return tamper


def delete_cr_row(conn: Connection) -> None:
    conn.execute(delete(cr(conn)))


def uncomplete_ec(conn: Connection) -> None:
    conn.execute(update(ec(conn).runs).values(completed=False))


def other_result_id(conn: Connection) -> None:
    conn.execute(update(ec(conn).runs).values(result_id=OTHER))


def grow_a_cluster(conn: Connection) -> None:
    c = ec(conn).clusters
    conn.execute(update(c).where(c.c.cluster == 0).values(size=c.c.size + 5))


def delete_ec_rows(conn: Connection) -> None:
    t = ec(conn)
    conn.execute(delete(t.assignments))
    conn.execute(delete(t.clusters))
    conn.execute(delete(t.runs))


CASES: dict[str, tuple[Callable[[Connection], None], str]] = {
    "model": (set_cr("model", "other"), "clusteringresult holds model = 'other', the log says 'm'"),
    "status": (
        set_cr("status", "failed"),
        "clusteringresult holds status = 'failed', the log says 'completed'",
    ),
    "k": (set_cr("k", 7), "clusteringresult holds k = 7, the log says 3"),
    "n_assignments": (
        set_cr("n_assignments", 1),
        "clusteringresult holds n_assignments = 1, the log says 300",
    ),
    "id": (
        set_cr("id", OTHER),
        "clusteringresult holds id = '00000000-0000-0000-0000-000000000001', the log says",
    ),
    "row deleted": (delete_cr_row, "clusteringresult has no row for the run"),
    "completed flag": (uncomplete_ec, "embeddingcluster does not show the completed run's"),
    "result_id": (
        other_result_id,
        "embeddingcluster holds result_id 00000000-0000-0000-0000-000000000001",
    ),
    "sizes": (grow_a_cluster, "embeddingcluster's cluster sizes differ from the log's"),
    "read-model rows deleted": (
        delete_ec_rows,
        "embeddingcluster does not show the completed run's",
    ),
}


@pytest.fixture
def one_run(db_url: str, tmp_path: Path) -> tuple[str, str]:
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(300))
    done = invoke(db_url, ["cluster", str(emb), "--model", "m", "--k", "3", "-q"])
    assert done.exit_code == 0, done.output
    clean = invoke(db_url, ["runs", "verify", "--all"])
    assert clean.exit_code == 0, clean.output
    return db_url, done.stdout.strip()


@pytest.mark.parametrize("case", list(CASES))
def test_a_read_model_changed_around_the_store_is_found(
    one_run: tuple[str, str], case: str
) -> None:
    db, run = one_run
    tamper, message = CASES[case]
    with EventStore.open(db) as store, store.transaction(write=True) as conn:
        tamper(conn)
    result = invoke(db, ["runs", "verify", "--all"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if message in line]
    assert lines, result.stdout
    assert all(line.startswith(run) and line.endswith(REPAIR) for line in lines), lines
    repaired = invoke(db, ["projections", "rebuild", "-q"])
    assert repaired.exit_code == 0, repaired.output
    again = invoke(db, ["runs", "verify", "--all"])
    assert again.exit_code == 0, again.output


def test_a_checkpoint_past_the_head_is_not_up_to_date(one_run: tuple[str, str]) -> None:
    db, _ = one_run
    with EventStore.open(db) as store, store.transaction(write=True) as conn:
        t = pj_schema.checkpoints
        conn.execute(update(t).where(t.c.name == "clusteringresult").values(position=10**6))
    status = invoke(db, ["projections", "status", "--json"])
    states = {p["name"]: p["state"] for p in json.loads(status.stdout)["projections"]}
    assert states == {"clusteringresult": "ahead_of_log", "embeddingcluster": "up_to_date"}
    assert "ahead of log" in invoke(db, ["projections", "status"]).stdout


def drop_runs_guard(store: EventStore) -> list[str]:
    """Drop every append-only trigger of cs_runs; returns the DDL used."""
    if store.backend == "sqlite":
        names, on = ["cs_runs_no_delete", "cs_runs_no_update"], ""
    else:
        names, on = ["cs_runs_no_truncate", "cs_runs_no_update_delete"], " ON cs_runs"
    with store.transaction(write=True) as conn:
        for name in names:
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
    return names


def test_missing_triggers_are_a_finding_and_init_restores_them(
    one_run: tuple[str, str],
) -> None:
    db, _ = one_run
    with EventStore.open(db) as store:
        dropped = drop_runs_guard(store)
        assert store.missing_triggers() == dropped
    result = invoke(db, ["runs", "verify", "--all"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].endswith(
        f"the log's append-only triggers {', '.join(dropped)} are missing (dropped around "
        "the store); `clusterstore init` restores them"
    )
    as_json = json.loads(invoke(db, ["runs", "verify", "--all", "--json"]).stdout)
    assert (as_json["ok"], as_json["missing_triggers"]) == (False, dropped)
    restored = invoke(db, ["init"])
    assert restored.exit_code == 0, restored.output
    assert f"Warning: restored the log's append-only triggers {', '.join(dropped)}" in (
        restored.stderr
    )
    assert invoke(db, ["runs", "verify", "--all"]).exit_code == 0
    with EventStore.open(db) as store:
        assert store.missing_triggers() == []


def test_a_run_deleted_from_cs_runs_is_still_found(one_run: tuple[str, str]) -> None:
    db, run = one_run
    with EventStore.open(db) as store:
        drop_runs_guard(store)
        with store.transaction(write=True) as conn:
            conn.exec_driver_sql("DELETE FROM cs_runs")
    listed = json.loads(invoke(db, ["runs", "list", "--json"]).stdout)
    assert [r["run_id"] for r in listed] == [run]
    assert invoke(db, ["runs", "show", run[:8]]).exit_code == 0
    result = invoke(db, ["runs", "verify", "--all"])
    assert result.exit_code == 1
    assert (
        f"{run}: the run has no cs_runs row (deleted around the store); its events are in "
        "the log, and `clusterstore init` restores the row"
    ) in result.stdout.splitlines()
    restored = invoke(db, ["init"])
    assert f"Warning: restored the cs_runs row of run {run}" in restored.stderr
    assert invoke(db, ["runs", "verify", "--all"]).exit_code == 0


def test_verify_names_a_run_the_read_models_skip(one_run: tuple[str, str]) -> None:
    """A run the read models skip from a damaged event on (a dead letter) is a finding at
    that seq with the supported repair; once the row is restored, verify says the read models
    still skip it and that a rebuild brings it back; after the rebuild (and `init`, which
    puts the append-only guard back) verify is clean."""
    db, run = one_run
    run_id = uuid.UUID(run)
    with EventStore.open(db) as store:
        drop_triggers(store)
        original = stored_payload(store, run_id, 10)
        set_payload(store, run_id, 10, b"\xc1")
    assert invoke(db, ["projections", "rebuild", "-q"]).exit_code == 0
    result = invoke(db, ["runs", "verify", "--all", "--json"])
    assert result.exit_code == 1
    (report,) = json.loads(result.stdout)["runs"]
    damaged = [f for f in report["findings"] if f["kind"] == "read_model_damaged"]
    assert [f["seq"] for f in damaged] == [10]
    assert damaged[0]["message"].startswith(
        "the read models skip the run from this event on (it does not decode: "
        "AssignmentRecorded payload does not decode: "
    )
    assert damaged[0]["message"].endswith(
        "repair the event (restore its row from a backup), then `clusterstore projections "
        "rebuild` brings the run back"
    )
    with EventStore.open(db) as store:
        set_payload(store, run_id, 10, original)
    result = invoke(db, ["runs", "verify", run])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:] == [  # after the line on the dropped triggers
        f"{run} seq 10: the read models skip the run from this event on ("
        f"{damaged[0]['message'].split('(it does not decode: ')[1].split('); repair')[0]}), "
        f"but the log reads whole now (repaired?); {REPAIR}, the run included"
    ]
    assert invoke(db, ["projections", "rebuild", "-q"]).exit_code == 0
    assert invoke(db, ["init"]).exit_code == 0
    again = invoke(db, ["runs", "verify", "--all"])
    assert again.exit_code == 0, again.output

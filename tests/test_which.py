"""which: one embedding across runs, from the read models; the optional lookup index."""

from __future__ import annotations

import json
import re
from uuid import UUID

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, InputError
from tests.audit_data import (
    RUN_A,
    RUN_B,
    RUN_C,
    distances_for,
    embedding_ids,
    labels_for,
    make_run,
)

IDS = embedding_ids(60)


def uuid_at(i: int) -> UUID:
    return UUID(bytes=IDS[i].tobytes())


@pytest.fixture
def three_runs(store: EventStore) -> EventStore:
    make_run(store, RUN_A, n=60, k=4, ids=IDS, seed=0)
    make_run(store, RUN_B, n=60, k=5, ids=IDS, seed=1, model="minilm")
    make_run(store, RUN_C, n=60, k=4, ids=IDS, seed=2, end="fail", rows=30)  # not completed
    projections.catch_up_all(store)
    return store


def plan(store: EventStore, sql: str, value: object) -> str:
    # new connections: SQLite's EXPLAIN does not notice a schema another connection changed
    # (a pooled connection keeps the statement prepared against the old schema)
    store.recorder.engine.dispose()
    with store.recorder.engine.connect() as conn:
        if store.backend == "sqlite":
            rows = conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"), {"v": value}).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.execute(text("SET enable_seqscan = off"))  # a tiny table: only an index counts
        rows = conn.execute(text(f"EXPLAIN {sql}"), {"v": value}).all()
        return "\n".join(str(r[0]) for r in rows)


def view_value(store: EventStore, eid: UUID) -> object:
    """The embedding id as the view shows it: CHAR(32) hex on SQLite, uuid on PostgreSQL."""
    return eid.hex if store.backend == "sqlite" else eid


@pytest.mark.parametrize("index", [False, True])
def test_which_finds_every_completed_run(three_runs: EventStore, index: bool) -> None:
    projections.set_lookup_index(three_runs, index)
    result = projections.which(three_runs, str(uuid_at(7)))
    assert result.indexed is index
    assert [p.run_id for p in result.placements] == [RUN_A, RUN_B]  # C did not complete
    for p, seed in zip(result.placements, (0, 1), strict=True):
        assert p.cluster == int(labels_for(60, 4 if seed == 0 else 5, seed)[7])
        assert p.distance == pytest.approx(float(distances_for(60, seed)[7]))
        assert p.cluster_id == projections.cluster_id(p.run_id, p.cluster)
    only = projections.which(three_runs, uuid_at(7), model="minilm")
    assert [p.run_id for p in only.placements] == [RUN_B]
    assert projections.which(three_runs, UUID(int=5)).placements == []


def test_lookup_index_serves_the_view(three_runs: EventStore) -> None:
    sql = "SELECT cluster, distance FROM embeddingcluster WHERE embedding_id = :v"
    value = view_value(three_runs, uuid_at(3))
    assert "_embedding" not in plan(three_runs, sql, value)  # off by default: a scan
    projections.set_lookup_index(three_runs, True)  # rebuilt with the ids stored: g2
    # partitioned by run, the plan names each partition's index (<partition>_embedding...)
    assert re.search(r"pj_ec_assignment_g2(_p\d+)?_embedding", plan(three_runs, sql, value))
    with three_runs.recorder.engine.connect() as conn:
        rows = conn.execute(text(sql), {"v": value}).all()
    assert len(rows) == 2
    # a rebuild keeps the choice: the new generation gets the index after its load
    projections.rebuild(three_runs, ["embeddingcluster"])
    assert "_embedding" in plan(three_runs, sql, value)
    projections.set_lookup_index(three_runs, False)
    assert "_embedding" not in plan(three_runs, sql, value)


def test_which_cli(three_runs: EventStore, db_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_url, "which", str(uuid_at(2)), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["run_id"] for r in data["runs"]] == [str(RUN_A), str(RUN_B)]
    assert set(data["runs"][0]) == {
        "run_id",
        "model",
        "started_at",
        "cluster",
        "cluster_id",
        "distance",
    }
    assert data["runs"][0]["started_at"].endswith("Z")
    text_out = runner.invoke(cli, ["--db", db_url, "which", str(uuid_at(2))])
    assert str(RUN_B) in text_out.stdout
    assert "no lookup index" in text_out.stderr
    on = runner.invoke(cli, ["--db", db_url, "projections", "lookup-index", "on"])
    assert on.stdout == "embedding-id lookup index: on\n"
    quiet = runner.invoke(cli, ["--db", db_url, "which", str(uuid_at(2))])
    assert quiet.stderr == ""
    bad = runner.invoke(cli, ["--db", db_url, "which", "not-a-uuid"])
    assert (bad.exit_code, bad.output) == (
        1,
        "Error: 'not-a-uuid' is not an embedding id (a UUID)\n",
    )
    with pytest.raises(InputError):
        projections.which(three_runs, "xyz")


def test_datasette_metadata_hides_the_internals(three_runs: EventStore, db_url: str) -> None:
    result = CliRunner().invoke(cli, ["--db", db_url, "datasette-metadata", "--database", "x"])
    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)["databases"]["x"]["tables"]
    hidden = {name for name, t in tables.items() if t.get("hidden")}
    assert {"cs_events", "cs_commits", "cs_runs", "pj_checkpoint", "pj_ec_assignment_g1"} <= hidden
    assert all(name.startswith(("cs_", "pj_")) for name in hidden)
    for view in ("embeddingcluster", "clustersize", "clusteringresult"):
        assert "description" in tables[view] and not tables[view].get("hidden")

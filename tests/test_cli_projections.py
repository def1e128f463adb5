"""``clusterstore projections``: exact output, exit codes and the status JSON shape; a
damaged run (skipped, reported, brought back by a rebuild after the repair) and read models
left behind by an interrupted projection step, as every reading command reports them."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from clusterstore.projections.runner import Runner
from tests.audit_data import drop_triggers, set_payload, stored_payload
from tests.pj_util import make_run, query


def invoke(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", db_url, "projections", *args])
    return result.exit_code, result.stdout, result.stderr


def test_status_json_before_anything_was_built(store: EventStore, db_url: str) -> None:
    code, out, err = invoke(db_url, "status", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "head": 0,
        "projections": [
            {
                "name": name,
                "generation": None,
                "checkpoint": None,
                "head": 0,
                "lag": 0,
                "state": "not_built",
                "updated_at": None,
                "runner": None,
            }
            for name in ("clusteringresult", "embeddingcluster")
        ],
        "damaged_runs": [],
        "runs_behind": [],
    }


def test_catch_up_then_status(store: EventStore, db_url: str) -> None:
    make_run(store, 10, seed=1)  # 13 events: RunStarted, centroids, 10 rows, RunCompleted
    make_run(store, 10, seed=2, recorded=4)
    head = store.max_position()
    assert head == 19
    code, out, err = invoke(db_url, "catch-up")
    assert (code, err) == (0, "")
    assert out == (
        "clusteringresult: applied 19 events (log head 19)\n"
        "embeddingcluster: applied 19 events (log head 19)\n"
    )
    third = make_run(store, 3, seed=3)
    assert invoke(db_url, "catch-up", "embeddingcluster", "--quiet") == (0, "", "")

    code, out, err = invoke(db_url, "status")
    assert (code, err) == (0, "")
    assert out == (
        "projection        generation  checkpoint  head  lag  state       runner\n"
        "----------------  ----------  ----------  ----  ---  ----------  ------\n"
        "clusteringresult           1          19    25    6  behind\n"
        "embeddingcluster           1          25    25    0  up to date\n"
        "the read models are behind the log (clusteringresult by 6 events; log head 25): "
        f"1 finished run is not in them ({third}), as an interrupted projection step leaves "
        "them; `clusterstore projections catch-up` brings them up to date\n"
    )
    status = json.loads(invoke(db_url, "status", "--json")[1])
    assert status["head"] == 25
    assert [(p["name"], p["checkpoint"], p["lag"], p["state"]) for p in status["projections"]] == [
        ("clusteringresult", 19, 6, "behind"),
        ("embeddingcluster", 25, 0, "up_to_date"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*", p["updated_at"]) for p in status["projections"])


def test_rebuild_output(store: EventStore, db_url: str) -> None:
    make_run(store, 10, seed=4)
    code, out, err = invoke(db_url, "rebuild", "embeddingcluster")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        r"embeddingcluster: rebuilt generation 1 from 13 events; live after \d+\.\d s, "
        r"[\d,]+ events/s, done in \d+\.\d s\n",
        out,
    )
    code, out, _ = invoke(db_url, "rebuild", "--quiet")
    assert (code, out) == (0, "")
    generations = [s.generation for s in projections.status(store)]
    assert generations == [1, 2]


def test_unknown_projection_is_a_usage_error(store: EventStore, db_url: str) -> None:
    code, _, err = invoke(db_url, "catch-up", "nope")
    assert code == 2
    assert err.endswith(
        "Error: Invalid value for '[NAME]': 'nope' is not one of 'clusteringresult', "
        "'embeddingcluster'.\n"
    )


def test_a_busy_projection_is_a_clear_error(store: EventStore, db_url: str) -> None:
    projections.catch_up_all(store)
    with store.recorder.connection() as conn:
        runner = Runner(store, projections.PROJECTIONS["clusteringresult"](store), conn)
        assert runner.lock.try_acquire()
        try:
            code, out, err = invoke(db_url, "rebuild", "clusteringresult")
            status = json.loads(invoke(db_url, "status", "--json")[1])
        finally:
            runner.lock.release()
    assert (code, out) == (1, "")
    assert err.startswith(
        "Error: projection clusteringresult is already being updated by another runner ("
    )
    assert err.endswith("shows it)\n")
    holders = [p["runner"] for p in status["projections"]]
    assert holders[0] is not None and holders[1] is None


# ---------------------------------------------------------------- a damaged run (issue 16)


def run_cli(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--db", db_url, *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_damaged_run_is_skipped_reported_and_brought_back(store: EventStore, db_url: str) -> None:
    """catch-up exits 0 with a warning; status, runs list, runs show and verify name the
    run; after the event is restored, a rebuild brings it back and everything is clean."""
    a = make_run(store, 10, seed=1)  # 13 events: positions 1-13
    b = make_run(store, 10, seed=2)  # positions 14-26; seq 5 is at 18
    drop_triggers(store)
    original = stored_payload(store, b, 5)
    set_payload(store, b, 5, b"\xc1")
    c = make_run(store, 10, seed=3)
    code, out, err = invoke(db_url, "catch-up", "--json")
    assert code == 0
    reason = (
        "AssignmentRecorded payload does not decode: MessagePack data is malformed: "
        "invalid opcode '\\xc1' (byte 0)"
    )
    assert err == (
        f"Warning: run {b} is damaged at seq 5 (log position 18): {reason}; the read "
        "models (clusteringresult, embeddingcluster) skip the run from there and go on with "
        "the others; repair the event (restore its row from a backup), then `clusterstore "
        "projections rebuild` brings the run back\n"
    )
    done = json.loads(out)
    assert done["projections"] == [
        {"name": "clusteringresult", "n_applied": 39},
        {"name": "embeddingcluster", "n_applied": 39},
    ]
    assert [(d["name"], d["run_id"], d["seq"], d["position"]) for d in done["damaged_runs"]] == [
        ("clusteringresult", str(b), 5, 18),
        ("embeddingcluster", str(b), 5, 18),
    ]
    assert invoke(db_url, "catch-up") == (
        0,
        "clusteringresult: applied 0 events (log head 39)\n"
        "embeddingcluster: applied 0 events (log head 39)\n",
        "",
    )

    code, out, err = invoke(db_url, "status")
    assert (code, err) == (0, "")
    assert out.splitlines()[4:] == [
        f"damaged: run {b} at seq 5 (log position 18): {reason}; skipped by clusteringresult, "
        "embeddingcluster; repair the event (restore its row from a backup), then "
        "`clusterstore projections rebuild` brings the run back"
    ]
    status = json.loads(invoke(db_url, "status", "--json")[1])
    assert [p["state"] for p in status["projections"]] == ["up_to_date", "up_to_date"]
    assert [(d["run_id"], d["seq"]) for d in status["damaged_runs"]] == [(str(b), 5)] * 2

    code, out, err = run_cli(db_url, "runs", "list")
    assert code == 0
    assert [line.split()[5] for line in out.splitlines()[2:]] == [
        "completed",
        "damaged",
        "completed",
    ]
    assert err == (
        f"note: run {b} is damaged at seq 5 (log position 18): {reason}; the read models "
        "skip it from there; repair the event (restore its row from a backup), then "
        "`clusterstore projections rebuild` brings the run back\n"
    )
    listed = json.loads(run_cli(db_url, "runs", "list", "--json")[1])
    damage = {r["run_id"]: r["damage"] for r in listed}
    assert damage == {
        str(a): None,
        str(b): {"seq": 5, "position": 18, "reason": reason},
        str(c): None,
    }
    only = json.loads(run_cli(db_url, "runs", "list", "--status", "damaged", "--json")[1])
    assert [r["run_id"] for r in only] == [str(b)]
    code, out, _ = run_cli(db_url, "runs", "show", str(b))
    assert code == 0
    assert f"damaged    run {b} is damaged at seq 5 (log position 18)" in out
    shown = json.loads(run_cli(db_url, "runs", "show", str(b), "--json")[1])
    assert shown["damage"] == {"seq": 5, "position": 18, "reason": reason}
    code, out, _ = run_cli(db_url, "runs", "verify", str(b))
    assert code == 1
    assert (
        f"{b} seq 5: the read models skip the run from this event on (it does not decode: "
        f"{reason}); repair the event (restore its row from a backup), then `clusterstore "
        "projections rebuild` brings the run back"
    ) in out.splitlines()

    set_payload(store, b, 5, original)  # the operator restores the row
    code, out, _ = run_cli(db_url, "runs", "verify", str(b))
    assert code == 1  # the log is whole again; the read models still skip the run
    assert "but the log reads whole now (repaired?)" in out
    code, out, err = invoke(db_url, "rebuild", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["damaged_runs"] == []
    assert json.loads(invoke(db_url, "status", "--json")[1])["damaged_runs"] == []
    assert run_cli(db_url, "init")[0] == 0  # the repair's last step: the guard back on
    assert run_cli(db_url, "runs", "verify", "--all")[0] == 0
    assert [r["damage"] for r in json.loads(run_cli(db_url, "runs", "list", "--json")[1])] == [
        None
    ] * 3


def test_cluster_goes_on_past_a_damaged_run(store: EventStore, db_url: str, tmp_path: Path) -> None:
    """A damaged run elsewhere does not keep a new run out of the read models."""
    make_run(store, 10, seed=1)
    b = make_run(store, 10, seed=2)
    drop_triggers(store)
    set_payload(store, b, 5, b"\xc1")
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32))
    code, out, err = run_cli(db_url, "cluster", str(emb), "--model", "m", "--k", "2", "-q")
    assert code == 0
    assert err.startswith(f"Warning: run {b} is damaged at seq 5 (log position 18): ")
    visible = {uuid.UUID(str(r)) for (r,) in query(store, "SELECT run_id FROM embeddingcluster")}
    assert uuid.UUID(out.strip()) in visible


# ------------------------------------------------- an interrupted projection step (issue 16)

BEHIND = (
    "Warning: the read models are behind the log (clusteringresult by {lag} events, "
    "embeddingcluster by {lag} events; log head {head}): 1 finished run is not in them "
    "({run}), as an interrupted projection step leaves them; `clusterstore projections "
    "catch-up` brings them up to date\n"
)


def test_an_interrupted_projection_step_is_reported(store: EventStore, db_url: str) -> None:
    """A run whose projection step never ran (as after a Ctrl-C or kill in `cluster`'s last
    step) is named, with the lag and the fix, by every command that reads the read models;
    a run still being written is not (it is not finished), nor a caught-up store."""
    first = make_run(store, 10, seed=1)
    assert invoke(db_url, "catch-up", "-q") == (0, "", "")
    make_run(store, 10, seed=2, recorded=4)  # still being written: no warning for it
    for args in (("runs", "list"), ("runs", "show", str(first)), ("projections", "status")):
        code, out, err = run_cli(db_url, *args)
        assert (code, err) == (0, ""), args
        assert "behind the log (" not in out
    done = make_run(store, 10, seed=3)  # complete in the log, its projection step never ran
    warning = BEHIND.format(lag=19, head=32, run=done)
    for args in (
        ("runs", "list"),
        ("runs", "list", "--json"),
        ("runs", "show", str(done)),
        ("runs", "show", str(done), "--json"),
        ("which", "00000000-0000-0000-0000-000000000001", "-q"),
    ):
        code, _, err = run_cli(db_url, *args)
        assert (code, err) == (0, warning), args
    code, out, err = invoke(db_url, "status")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == warning.removeprefix("Warning: ").rstrip("\n")
    assert json.loads(invoke(db_url, "status", "--json")[1])["runs_behind"] == [str(done)]
    assert invoke(db_url, "catch-up", "-q") == (0, "", "")
    code, _, err = run_cli(db_url, "runs", "list")
    assert (code, err) == (0, "")
    assert json.loads(invoke(db_url, "status", "--json")[1])["runs_behind"] == []

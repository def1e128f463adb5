"""``clusterstore projections``: exact output, exit codes and the status JSON shape."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from clusterstore.projections.runner import Runner
from tests.pj_util import make_run


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
    make_run(store, 3, seed=3)
    assert invoke(db_url, "catch-up", "embeddingcluster", "--quiet") == (0, "", "")

    code, out, err = invoke(db_url, "status")
    assert (code, err) == (0, "")
    assert out == (
        "projection        generation  checkpoint  head  lag  state       runner\n"
        "----------------  ----------  ----------  ----  ---  ----------  ------\n"
        "clusteringresult           1          19    25    6  behind\n"
        "embeddingcluster           1          25    25    0  up to date\n"
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

"""Run summaries: status from the log, cheap counts, telling ids apart, terminal text."""

from __future__ import annotations

from uuid import UUID

import pytest
import uuid_utils.compat as uuid7
from click.testing import CliRunner

from clusterstore.audit import (
    list_runs,
    parse_status,
    short_id,
    summarize_run,
    unique_prefix_length,
)
from clusterstore.audit.text import format_duration, size_histogram
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, InputError
from clusterstore.eventstore.runs import resume_run
from tests.audit_data import (
    RUN_A,
    RUN_B,
    RUN_C,
    RUN_D,
    distances_for,
    drop_triggers,
    embedding_ids,
    insert_row,
    labels_for,
    make_run,
    set_payload,
    stored_payload,
)


def test_status_from_the_log(store: EventStore) -> None:
    make_run(store, RUN_A)
    make_run(store, RUN_B, end="fail", rows=20)
    make_run(store, RUN_C, end="none", rows=0)
    make_run(store, RUN_D, end="fail", rows=10)
    resume_run(store, RUN_D)  # resumed after the failure: running again
    got = {s.run_id: (s.status, s.n_assignments, s.events) for s in list_runs(store)}
    assert got == {
        RUN_A: ("completed", 50, 53),
        RUN_B: ("failed", 20, 23),
        RUN_C: ("running", 0, 2),
        RUN_D: ("running", 10, 14),
    }
    assert [s.run_id for s in list_runs(store)] == [RUN_D, RUN_C, RUN_B, RUN_A]  # newest first
    assert [s.run_id for s in list_runs(store, status="failed")] == [RUN_B]
    assert list_runs(store, model="nope") == []


def test_resumed_then_completed(store: EventStore) -> None:
    make_run(store, RUN_A, end="fail", rows=20)
    _, writer = resume_run(store, RUN_A)
    writer.record(embedding_ids(50)[20:], labels_for(50, 4, 0)[20:], distances_for(50, 0)[20:])
    writer.complete()
    s = summarize_run(store, RUN_A)
    assert (s.status, s.n_assignments, s.error if s.failed else None) == ("completed", 50, None)
    assert s.duration_s is not None and s.duration_s >= 0


def test_a_row_inserted_around_the_store_does_not_change_the_status(store: EventStore) -> None:
    make_run(store, RUN_A)
    insert_row(store, RUN_A, 54, stored_payload(store, RUN_A, 10))
    s = summarize_run(store, RUN_A)
    assert (s.status, s.events) == ("completed", 54)


def test_undecodable_runstarted_is_a_problem_not_a_crash(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A)
    make_run(store, RUN_B)
    drop_triggers(store)
    set_payload(store, RUN_A, 1, b"\xc1")
    s = summarize_run(store, RUN_A)
    assert s.started is None and s.status == "completed"
    assert s.problem is not None and s.problem.startswith(f"run {RUN_A} seq 1: RunStarted")
    result = CliRunner().invoke(cli, ["--db", db_url, "runs", "list"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[3].split()[:3] == ["0190aaaa-0001", "?", "?"]
    assert result.stderr == f"note: run {RUN_A}: {s.problem}\n"


def test_unique_prefix_length_tells_uuid7s_apart() -> None:
    made_together = [uuid7.uuid7() for _ in range(50)]
    n = unique_prefix_length(made_together)
    shown = {short_id(u, n) for u in made_together}
    assert len(shown) == 50  # all different
    shorter = {short_id(u, n - 1) for u in made_together}
    assert n == 8 or len(shorter) < 50  # and no shorter length would do
    assert unique_prefix_length([RUN_A]) == 8
    assert unique_prefix_length([RUN_A, RUN_B]) == 12
    assert short_id(RUN_A, 12) == "0190aaaa-0001"
    assert short_id(RUN_A, 8) == "0190aaaa"
    assert short_id(RUN_A, 32) == str(RUN_A)
    same = UUID(int=5)
    assert unique_prefix_length([same, same]) == 32


def test_shown_prefixes_resolve(store: EventStore) -> None:
    ids = [uuid7.uuid7() for _ in range(3)]
    for i, run_id in enumerate(ids):
        make_run(store, run_id, n=5, k=2, seed=i)
    n = unique_prefix_length(ids)
    assert [store.resolve_run(short_id(r, n)) for r in ids] == ids


def test_parse_status() -> None:
    assert [parse_status(s) for s in ("Running", "incomplete", "failed")] == [
        "running",
        "running",
        "failed",
    ]
    with pytest.raises(InputError):
        parse_status("done")


def test_durations() -> None:
    assert [format_duration(x) for x in (None, 0.25, 1.5, 61, 7300)] == [
        "-",
        "0.25s",
        "1.5s",
        "1m01s",
        "2h01m",
    ]


def test_histogram() -> None:
    assert size_histogram([]) == ["cluster sizes: no clusters"]
    assert size_histogram([3, 3, 4]) == [
        "cluster sizes: 3 clusters, min 3, median 3, max 4",
        "  3  ########################  2",
        "  4  ############              1",
    ]
    wide = size_histogram([0, 10, 100, 1000, 10000, 100000])
    assert wide[0] == "cluster sizes: 6 clusters, min 0, median 550, max 100000 (1 empty)"
    assert wide[1].split() == ["0", "########################", "1"]
    assert sum(int(line.split()[-1]) for line in wide[1:]) == 6
    assert len(wide) <= 11

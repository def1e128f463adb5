"""What must hold after a harness run, looked at through the store as a whole."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any
from uuid import UUID

from click.testing import CliRunner

from cli.main import cli
from eventstore import AssignmentRecorded, EventStore, RunCompleted, RunResumed
from eventstore.events import BY_CODE
from tests.pj_util import snapshot as read_model_snapshot

from .driver import FORBIDDEN, Harness


def check_all(h: Harness) -> None:
    check_no_forbidden_output(h)
    check_reader(h)
    check_every_run_verifies(h)
    check_log_is_whole(h)
    check_runs_match_their_writers(h)
    check_read_models_equal_a_rebuild(h)


def check_no_forbidden_output(h: Harness) -> None:
    """No process ever showed a lock error or a traceback."""
    for name, text in h.process_logs().items():
        for word in FORBIDDEN:
            assert word not in text, (name, text[-3000:])


def check_reader(h: Harness) -> None:
    """Every read command the reader ran during the load answered (exit 0)."""
    assert h.report.reader["commands"] > 0
    assert h.report.reader["problems"] == []


def check_every_run_verifies(h: Harness) -> None:
    """``runs verify --all``: every run whole; every completed one's digest, count, cluster
    sizes and read model agree with the log."""
    result = CliRunner().invoke(cli, ["--db", h.db_url, "runs", "verify", "--all", "--json"])
    assert result.exit_code == 0, result.output[-5000:]
    for run in json.loads(result.stdout)["runs"]:
        assert run["ok"], run
        if run["recorded_digest"] is not None:
            assert run["read_model"] == "ok", run


def check_log_is_whole(h: Harness) -> None:
    """The global feed: dense positions, each (run, seq) once, every run's seqs 1..head."""
    store = h.store
    seen: dict[UUID, list[int]] = defaultdict(list)
    position = 0
    for page in store.recorder.read_all_pages():
        for ev in page:
            position += 1
            assert ev.position == position
            seen[ev.run_id].append(ev.seq)
    assert position == store.max_position()
    heads = {r.run_id: r.head for r in store.runs()}
    assert set(seen) == set(heads)
    for run, seqs in seen.items():
        assert sorted(seqs) == list(range(1, heads[run] + 1)), run
    h.report.events = position
    h.report.runs = len(heads)


def check_runs_match_their_writers(h: Harness) -> None:
    """Each run holds exactly what its writer (or resume) reported: n assignments, the
    reported digest in its RunCompleted, and n + 3 events (+1 per resume); a killed run
    that was not resumed is incomplete, with whole batches only."""
    n = h.spec.n
    for job in h.report.jobs:
        assert job.run_id is not None, job.model
        kinds = _kinds(h.store, job.run_id)
        resumes = kinds.count(RunResumed.NAME)
        if job.result is None:  # killed and not resumable
            assert job.killed_at_head is not None
            assert RunCompleted.NAME not in kinds
            assert kinds.count(AssignmentRecorded.NAME) % h.spec.batch_size == 0
            continue
        assert kinds.count(AssignmentRecorded.NAME) == n, job.model
        assert len(kinds) == n + 3 + resumes, job.model
        assert resumes == (1 if job.killed_at_head is not None else 0), job.model
        completed = _last(h.store, job.run_id)
        assert isinstance(completed, RunCompleted)
        assert (completed.count, completed.digest) == (n, job.result["digest"]), job.model


def check_read_models_equal_a_rebuild(h: Harness) -> None:
    """The read models the follower (and the writers' own catch-ups) built equal a full
    rebuild from the log."""
    before = read_model_snapshot(h.store)
    result = CliRunner().invoke(cli, ["--db", h.db_url, "projections", "rebuild", "--quiet"])
    assert result.exit_code == 0, result.output
    after = read_model_snapshot(h.store)
    for name in before:
        assert after[name] == before[name], name
    # one clusteringresult row per run; embeddingcluster holds the completed runs' rows
    assert len(before["clusteringresult"]) == len(h.store.runs())
    completed = sum(1 for j in h.report.jobs if j.result is not None)
    assert len(before["embeddingcluster"]) >= completed * h.spec.n > 0


def _kinds(store: EventStore, run_id: UUID) -> list[str]:
    """The event type names of a run, in seq order (by type code: nothing decoded)."""
    return [BY_CODE[e.type].NAME for e in store.read_raw(run_id)]


def _last(store: EventStore, run_id: UUID) -> Any:
    head = store.head(run_id)
    return next(iter(store.read(run_id, after=head - 1))).event

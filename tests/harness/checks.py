"""What must hold after a harness run, looked at through the store as a whole."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from typing import Any
from uuid import UUID

from click.testing import CliRunner
from sqlalchemy import text

from clusterstore.cli.main import cli
from clusterstore.eventstore import AssignmentRecorded, EventStore, RunCompleted, RunResumed
from clusterstore.eventstore.events import BY_CODE
from clusterstore.projections.base import current_generation
from clusterstore.projections.schema import cr_tables, ec_tables

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
    for name, log in h.process_logs().items():
        for word in FORBIDDEN:
            assert word not in log, (name, log[-3000:])


def check_reader(h: Harness) -> None:
    """Every read command the reader ran during the load answered (exit 0)."""
    assert h.report.reader["commands"] > 0
    assert h.report.reader["problems"] == [], h.report.reader["problems"]


def check_every_run_verifies(h: Harness) -> None:
    """``runs verify --all``: every run whole; every completed one's digest, count, cluster
    sizes and read model agree with the log."""
    result = CliRunner().invoke(cli, ["--db", h.db_url, "runs", "verify", "--all", "--json"])
    assert result.exit_code == 0, result.output[-5000:]
    for run in json.loads(result.stdout)["runs"]:
        assert run["ok"], run
        if run["assignment_digest"] is not None:
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
        assert (completed.count, completed.digest) == (n, job.result["assignment_digest"]), (
            job.model
        )


def check_read_models_equal_a_rebuild(h: Harness) -> None:
    """The read models the follower (and the writers' own catch-ups) built equal a full
    rebuild from the log: every view and current physical table, row for row (hashed in
    key order, streamed: the long form holds millions of rows)."""
    before = read_model_digests(h.store)
    result = CliRunner().invoke(cli, ["--db", h.db_url, "projections", "rebuild", "--quiet"])
    assert result.exit_code == 0, result.output
    after = read_model_digests(h.store)
    assert after == before
    # one clusteringresult row per run; embeddingcluster holds the completed runs' rows
    assert before["clusteringresult"][0] == len(h.store.runs())
    completed = sum(1 for j in h.report.jobs if j.result is not None) + h.report.resumed
    assert before["embeddingcluster"][0] == completed * h.spec.n > 0  # + the references


def read_model_digests(store: EventStore) -> dict[str, tuple[int, str]]:
    """(rows, sha256 of the rows in key order) of each read-model view and of the current
    generation's physical tables (NaN made comparable), like ``tests.pj_util.snapshot``."""
    with store.recorder.transaction() as conn:
        ec = current_generation(conn, "embeddingcluster")
        cr = current_generation(conn, "clusteringresult")
    assert ec is not None and cr is not None
    queries = {
        "embeddingcluster": "SELECT * FROM embeddingcluster ORDER BY run_id, seq",
        "clustersize": "SELECT * FROM clustersize ORDER BY run_id, cluster",
        "clusteringresult": "SELECT * FROM clusteringresult ORDER BY run_id",
    }
    for name, table in [
        *zip(("runs", "assignments", "clusters"), ec_tables(ec), strict=True),
        ("results", cr_tables(cr).results),
    ]:
        keys = ", ".join(c.name for c in table.primary_key.columns)
        queries[name] = f"SELECT * FROM {table.name} ORDER BY {keys}"
    out = {}
    with store.recorder.connection() as conn:
        for name, sql in queries.items():
            digest, rows = hashlib.sha256(), 0
            with store.recorder.transaction(conn=conn) as c:
                result = c.execution_options(yield_per=20_000).execute(text(sql))
                for row in result:
                    digest.update(repr(tuple(map(_same_nan, row))).encode())
                    rows += 1
            out[name] = (rows, digest.hexdigest())
    return out


def _same_nan(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _kinds(store: EventStore, run_id: UUID) -> list[str]:
    """The event type names of a run, in seq order (by type code: nothing decoded)."""
    return [BY_CODE[e.type].NAME for e in store.read_raw(run_id)]


def _last(store: EventStore, run_id: UUID) -> Any:
    head = store.head(run_id)
    return next(iter(store.read(run_id, after=head - 1))).event

"""PostgreSQL faults in the middle of a ``cluster`` run: the writer's connection is cut.

The server itself is NOT restarted: other tests (and other people) share it, so a restart
would fail them. ``pg_terminate_backend`` on the writer's own backend is what a restart
(or a network cut, or an admin's kill) looks like to that writer: the connection dies
mid-transaction. The backend pid comes from the writer itself (``slow_commit_cli`` writes
it), and is checked against ``pg_stat_activity`` (application_name ``clusterstore``,
``idle in transaction``) before it is terminated; no other backend is touched.

The cut lands after a batch's events, commit row and position are written and before its
COMMIT. Then: the run fails with one ``Error:`` line (no password in it); every batch
committed before stays, byte for byte; the cut batch is gone; RunFailed is recorded on a new
connection; ``runs resume`` completes the run with the digest of an uninterrupted run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, RunFailed, RunResumed
from clusterstore.eventstore.store import decode_stored
from tests.conftest import pg_base_url

pytestmark = pytest.mark.postgres_only

N, BATCH, HOLD = 20_000, 1_000, 0.3
SECRET = "s3cret"
TIMEOUT = 120
SLOW_COMMIT_CLI = [sys.executable, "-m", "tests.harness.slow_commit_cli"]


def blobs(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 4 * rng.standard_normal((5, d))
    return (centres[rng.integers(0, 5, n)] + rng.standard_normal((n, d))).astype(np.float32)


def terminate_when_idle_in_transaction(
    store: EventStore, pid_file: Path, child: subprocess.Popen[str], *, skip: str, min_head: int
) -> tuple[UUID, int]:
    """Wait until the writer's run (any run but ``skip``) has ``min_head`` committed events
    and its backend is inside a transaction; terminate that backend. Returns the run and
    its committed head at that moment."""
    # autocommit: pg_stat_activity is a snapshot taken once per transaction
    admin = create_engine(
        pg_base_url(),
        isolation_level="AUTOCOMMIT",
        connect_args={"application_name": "harness-admin"},
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        with admin.connect() as conn:
            while time.monotonic() < deadline:
                assert child.poll() is None, "the writer ended before the fault"
                heads = [h for h in store.runs() if str(h.run_id) != skip]
                if heads and heads[0].head >= min_head and pid_file.exists():
                    pid = int(pid_file.read_text())
                    state = conn.execute(
                        text(
                            "SELECT state FROM pg_stat_activity WHERE pid = :p "
                            "AND application_name = 'clusterstore'"
                        ),
                        {"p": pid},
                    ).scalar()
                    if state == "idle in transaction":
                        head = store.head(heads[0].run_id)  # committed: the cut batch is not
                        ok = conn.execute(
                            text("SELECT pg_terminate_backend(:p)"), {"p": pid}
                        ).scalar()
                        assert ok
                        return heads[0].run_id, head
                time.sleep(0.01)
    finally:
        admin.dispose()
    raise AssertionError("the writer was never seen inside a transaction")


def test_connection_killed_mid_transaction_then_resume(
    store: EventStore, db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    path = tmp_path / "x.npy"
    np.save(path, blobs(N))
    url = make_url(db_url).set(password=SECRET).render_as_string(hide_password=False)
    args = ["cluster", str(path), "--model", "m", "--k", "5", "--seed", "11", "--quiet"]
    # the reference: the same run, uninterrupted (in this process)
    whole = CliRunner().invoke(cli, ["--db", db_url, *args, "--json"])
    assert whole.exit_code == 0, whole.output
    reference = json.loads(whole.stdout)

    pid_file = tmp_path / "backend.pid"
    child = subprocess.Popen(
        [*SLOW_COMMIT_CLI, str(HOLD), "--db", url, *args, "--batch-size", str(BATCH)],
        env={**subprocess_env, "HARNESS_PID_FILE": str(pid_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run, committed = terminate_when_idle_in_transaction(
            store, pid_file, child, skip=reference["run_id"], min_head=2 + 3 * BATCH
        )
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    before = [e for e in store.read_raw(run) if e.seq <= committed]

    # a clear one-line error, no traceback, no password
    assert (child.returncode, out) == (1, ""), err
    assert err.count("\n") == 1 and SECRET not in err, err
    assert err.startswith("Error: cannot use the database at postgresql+psycopg://postgres:***@")
    # the rest of the line is libpq's own wording, which depends on timing ("terminating
    # connection due to administrator command", "server closed the connection
    # unexpectedly", "the connection is lost"): the prefix above is the contract.

    # what was committed stays; the cut batch is gone; RunFailed came on a new connection
    stored = list(store.read_raw(run))
    assert stored[:committed] == before and len(before) == committed
    assert [e.seq for e in stored] == list(range(1, committed + 2))
    failed = decode_stored(stored[-1])
    assert isinstance(failed, RunFailed) and failed.last_seq == committed
    assert (committed - 2) % BATCH == 0  # whole batches only
    positions = [e.position for e in store.feed()]
    assert positions == list(range(1, len(positions) + 1))  # dense: the cut position reused

    resumed = CliRunner().invoke(cli, ["--db", url, "runs", "resume", str(run), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert SECRET not in resumed.output
    out_json = json.loads(resumed.stdout)
    assert (out_json["status"], out_json["resumed_from"]) == ("completed", committed - 2)
    assert out_json["assignment_digest"] == reference["assignment_digest"]
    markers = [e.seq for e in store.read(run) if isinstance(e.event, RunResumed)]
    assert markers == [committed + 2]
    verified = CliRunner().invoke(cli, ["--db", db_url, "runs", "verify", "--all"])
    assert verified.exit_code == 0, verified.output

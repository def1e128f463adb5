"""A real writer process killed with SIGKILL in the middle of appending, then resumed: the
completed run is identical to one that was never interrupted (both backends)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clusterstore.cli.main import cli
from clusterstore.eventstore import AssignmentRecorded, EventStore, RunResumed

N = 200_000
BATCH = 100


def payloads(store: EventStore, run_id: object) -> bytes:
    return b"".join(e.payload for e in store.read_raw(run_id) if e.type == AssignmentRecorded.TYPE)  # type: ignore[arg-type]


@pytest.mark.slow
def test_sigkill_mid_append_then_resume_equals_an_uninterrupted_run(
    store: EventStore, db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((N, 4)) + 4 * rng.integers(0, 3, (N, 1))).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    args = ["cluster", str(path), "--model", "m", "--k", "3", "--seed", "9", "--quiet"]
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clusterstore",
                "--db",
                db_url,
                *args,
                "--batch-size",
                str(BATCH),
            ],
            env=subprocess_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert child.poll() is None, f"the writer ended first: {log.read_text()}"
            heads = store.runs()
            if heads and store.head(heads[0].run_id) > 2 + 20 * BATCH:
                break
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    run_id = store.runs()[0].run_id
    last = next(iter(store.read(run_id, after=store.head(run_id) - 1)))
    assert isinstance(last.event, AssignmentRecorded)  # no RunFailed: it was killed
    rows_before = store.head(run_id) - 2
    assert 0 < rows_before < N and rows_before % BATCH == 0  # whole transactions only

    runner = CliRunner()
    resumed = runner.invoke(cli, ["--db", db_url, "runs", "resume", run_id.hex[:12], "--json"])
    assert resumed.exit_code == 0, resumed.output
    out = json.loads(resumed.stdout)
    assert (out["status"], out["n_assignments"], out["resumed_from"]) == (
        "completed",
        N,
        rows_before,
    )
    whole = runner.invoke(cli, ["--db", db_url, *args, "--batch-size", "7000", "--json"])
    assert whole.exit_code == 0, whole.output
    reference = json.loads(whole.stdout)
    assert out["assignment_digest"] == reference["assignment_digest"]
    assert payloads(store, run_id) == payloads(store, reference["run_id"])
    markers = [e for e in store.read(run_id) if isinstance(e.event, RunResumed)]
    assert [(m.seq, m.event.from_row) for m in markers] == [(rows_before + 3, rows_before)]

"""Ctrl-C through click, on every backend: one ``Error:`` line, exit code 130 (128 + SIGINT,
as a shell reports it), never click's bare ``Aborted!`` (exit 1); the line says what the
interruption left, and nothing stored is lost.

The interruption is a ``KeyboardInterrupt`` raised where Ctrl-C lands in a real terminal:
from a progress bar's update (the input check, the projection step, the export), and a real
SIGINT to this process for ``catch-up --follow``'s signal handler. Ctrl-C in a run's write
loop (the run named, resumed to the digest of an uninterrupted run) is test_runs_fail.py's
and test_clustering_runs.py's."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterstore import projections
from clusterstore.cli import cluster as cli_cluster
from clusterstore.cli import export as cli_export
from clusterstore.cli import projections as cli_projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore

N = 400


def run(db_url: str, *args: Any) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *map(str, args)])


@pytest.fixture
def emb(tmp_path: Path) -> Path:
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).standard_normal((N, 6)).astype(np.float32))
    return path


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """``catch-up --follow`` installs SIGINT and SIGTERM handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def ctrl_c_in(stage: str, after: int = 1) -> Callable[..., Any]:
    """A ``progress`` whose bar for ``stage`` raises KeyboardInterrupt at its ``after``-th
    update (the others count silently)."""

    @contextmanager
    def progress(label: str, total: int, *, quiet: bool) -> Iterator[Any]:
        calls = []

        class Bar:
            def update(self, n: int) -> None:
                calls.append(n)
                if label == stage and len(calls) >= after:
                    raise KeyboardInterrupt

        yield Bar()

    return progress


def runs_json(db_url: str) -> list[dict[str, Any]]:
    listed = run(db_url, "runs", "list", "--json")
    assert listed.exit_code == 0, listed.output
    runs: list[dict[str, Any]] = json.loads(listed.stdout)
    return runs


def test_ctrl_c_before_the_run_starts_writes_nothing(
    store: EventStore, db_url: str, emb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_cluster, "progress", ctrl_c_in("checking input"))
    stopped = run(db_url, "cluster", emb, "--model", "m", "--k", 3, "--seed", 1)
    assert (stopped.exit_code, stopped.stdout, stopped.stderr) == (
        130,
        "",
        "Error: interrupted (Ctrl-C)\n",
    )
    assert store.runs() == []


def test_ctrl_c_in_the_projection_step_says_the_run_is_stored(
    store: EventStore, db_url: str, emb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no follower alongside the write: the projection step has the whole run to apply
    monkeypatch.setattr(projections, "alongside", lambda store, **_: nullcontext())
    monkeypatch.setattr(cli_projections, "progress", ctrl_c_in("projecting"))
    stopped = run(db_url, "cluster", emb, "--model", "m", "--k", 3, "--seed", 1, "-q")
    (done,) = store.runs()
    assert (stopped.exit_code, stopped.stdout, stopped.stderr) == (
        130,
        "",
        f"Error: interrupted (Ctrl-C) while the read models were brought up to date: run "
        f"{done.run_id} is completed and stored, but the read models are behind it; "
        "`clusterstore projections catch-up` brings them up to date\n",
    )
    monkeypatch.undo()
    assert [r["status"] for r in runs_json(db_url)] == ["completed"]
    caught = run(db_url, "projections", "catch-up", "-q")
    assert caught.exit_code == 0, caught.output
    verified = run(db_url, "runs", "verify", "--all", "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"]


def test_ctrl_c_in_export_leaves_no_file(
    store: EventStore, db_url: str, emb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = run(db_url, "cluster", emb, "--model", "m", "--k", 3, "--seed", 1, "-q")
    assert made.exit_code == 0, made.output
    out = tmp_path / "out" / "a.csv"
    out.parent.mkdir()
    monkeypatch.setattr(cli_export, "progress", ctrl_c_in("exporting"))
    stopped = run(db_url, "export", made.stdout.strip(), "-o", out)
    assert (stopped.exit_code, stopped.stdout, stopped.stderr) == (
        130,
        "",
        f"Error: interrupted (Ctrl-C); nothing was written to {out}\n",
    )
    assert list(out.parent.iterdir()) == []  # neither the file nor its temporary file


def fake_follow(signum: int) -> Callable[..., None]:
    """A follower that receives ``signum`` and runs until its stop flag is set."""

    def follow(store: EventStore, names: Any, *, stop: Callable[[], bool], **_: Any) -> None:
        os.kill(os.getpid(), signum)
        deadline = time.monotonic() + 30
        while not stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop()

    return follow


def test_ctrl_c_stops_follow_with_130_and_sigterm_with_0(
    store: EventStore, db_url: str, monkeypatch: pytest.MonkeyPatch, signal_handlers: None
) -> None:
    monkeypatch.setattr(projections, "follow", fake_follow(signal.SIGINT))
    stopped = run(db_url, "projections", "catch-up", "--follow", "-q")
    assert (stopped.exit_code, stopped.stdout, stopped.stderr) == (
        130,
        "",
        f"Error: interrupted (Ctrl-C): stopped following {store.display_url}; the read "
        "models keep every batch applied before it (`clusterstore projections status` "
        "shows them)\n",
    )
    monkeypatch.setattr(projections, "follow", fake_follow(signal.SIGTERM))
    terminated = run(db_url, "projections", "catch-up", "--follow", "-q")
    assert (terminated.exit_code, terminated.stdout, terminated.stderr) == (0, "", "")

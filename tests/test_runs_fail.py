"""Ctrl-C in the middle of an append: the append finishes, then RunFailed is recorded."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from clusterstore.eventstore import AssignmentRecorded, EventStore, RunFailed
from clusterstore.eventstore.runs import start_run


def rows(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.zeros((hi - lo, 2), dtype=">u8")
    ids[:, 1] = np.arange(lo, hi)
    return ids.view(np.uint8).reshape(-1, 16), np.arange(lo, hi) % 2, np.zeros(hi - lo)


@pytest.fixture(autouse=True)
def default_ctrl_c() -> Iterator[None]:
    """Python's own SIGINT handler, as in an interactive session: a shell that starts the
    test run in the background (no job control) makes SIGINT ignored, and Python then
    installs no handler, so Ctrl-C would never reach the code under test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_during_append(store: EventStore, monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """SIGINT arrives while the nth append is running (here: right after its COMMIT)."""
    calls = {"n": 0}
    real = store.append

    def append(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # without deferral, KeyboardInterrupt is raised here
        return result

    monkeypatch.setattr(store, "append", append)


def test_ctrl_c_during_an_append_waits_for_it_then_records_run_failed(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = start_run(
        store, model="m", algorithm="kmeans-l2", n_embeddings=30, dim=2, k=2, batch_size=10
    )
    writer.record_centroids(np.zeros((2, 2)))
    ctrl_c_during_append(store, monkeypatch, nth=2)
    with pytest.raises(KeyboardInterrupt), writer:
        writer.record(*rows(0, 30))
    events = list(store.read(writer.run_id))
    assert sum(isinstance(e.event, AssignmentRecorded) for e in events) == 20
    last = events[-1]
    assert isinstance(last.event, RunFailed)
    assert (last.seq, last.event.last_seq, last.event.error) == (23, 22, "interrupted (Ctrl-C)")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # raised after the append's bookkeeping, not inside the driver call
    assert (writer.rows_done, writer.head) == (20, 23)


def test_ctrl_c_during_cluster_names_the_run_and_how_to_resume(
    db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's one line after Ctrl-C: the run id and `clusterstore runs resume <id>`."""
    from click.testing import CliRunner

    from clusterstore.cli.main import cli
    from tests.test_cli_cluster import blobs

    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(400))
    calls = {"n": 0}
    real = EventStore.append

    def append(self: EventStore, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # RunStarted, centroids, then the first batch of assignments
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        return result

    monkeypatch.setattr(EventStore, "append", append)
    args = ["--db", db_url, "cluster", str(emb), "--model", "m", "--k", "3", "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--batch-size", "100"])
    with EventStore.open(db_url) as store:
        (head,) = store.runs()
    run = head.run_id
    assert (result.exit_code, result.stdout) == (130, ""), result.output  # 128 + SIGINT
    assert result.stderr == (
        f"Error: interrupted (Ctrl-C): run {run} is stored up to its last complete batch and "
        f"marked failed; `clusterstore runs resume {run}` continues it\n"
    )


def test_ctrl_c_during_record_says_it_is_recorded_again(
    db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorded run (labels from elsewhere) cannot be resumed: the line says to run the
    command again, not `runs resume`."""
    from click.testing import CliRunner

    from clusterstore.cli.main import cli

    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(400, dtype=np.int32) % 3)
    np.save(tmp_path / "ids.npy", np.array([str(uuid.UUID(int=i + 1)) for i in range(400)]))
    calls = {"n": 0}
    real = EventStore.append

    def append(self: EventStore, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # RunStarted, then the first batch of assignments
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        return result

    monkeypatch.setattr(EventStore, "append", append)
    args = ["--db", db_url, "record", str(labels), "--model", "m", "--algorithm", "hdbscan"]
    args += ["--ids", str(tmp_path / "ids.npy")]
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    with EventStore.open(db_url) as store:
        (head,) = store.runs()
        last = list(store.read(head.run_id))[-1]
    run = head.run_id
    assert isinstance(last.event, RunFailed), last
    assert (result.exit_code, result.stdout) == (130, ""), result.output
    assert result.stderr == (
        f"Error: interrupted (Ctrl-C): run {run} is stored up to its last complete batch and "
        "marked failed; run the command again (a new run: this one cannot be resumed)\n"
    )

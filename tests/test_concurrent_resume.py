"""Two ``runs resume`` of one run at once, on both backends: the loser is told "another
process is resuming this run" (``ConcurrentWriterError``, exit 1, one ``Error:`` line), not
the re-send conflict it used to read as (which sounds like tampering), and stores nothing:
no RunResumed, no RunFailed; the winner carries the run to the digest of an uninterrupted
run.

The race is made deterministic: the loser's view of the run is read before the winner
resumes it (as when both start together), or the winner resumes while the loser is
writing (a second resume started while the first is under way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from click.testing import CliRunner

from clusterstore.audit import verify_run
from clusterstore.cli.main import cli
from clusterstore.clustering import ClusterSettings, cluster_file, resume
from clusterstore.clustering import runner as clustering_runner
from clusterstore.eventstore import (
    ConcurrentWriterError,
    EventConflictError,
    EventStore,
    RunFailed,
    RunResumed,
)
from clusterstore.eventstore.runs import read_progress
from tests.test_clustering_runs import FailAfter, blobs, log_snapshot

SETTINGS = ClusterSettings(model="m", k=4, seed=2, batch_size=100, chunk_rows=128)


@pytest.fixture
def broken(store: EventStore, tmp_path: Path) -> tuple[UUID, str]:
    """A run that failed after 300 of 1,000 rows, and the digest of an uninterrupted one."""
    path = tmp_path / "x.npy"
    np.save(path, blobs(1000))
    whole = cluster_file(store, path, SETTINGS)
    with pytest.raises(RuntimeError):
        cluster_file(store, path, SETTINGS, reporter=FailAfter(300))
    return store.runs()[-1].run_id, whole.digest


def message(run_id: UUID, seq: int) -> str:
    return (
        f"run {run_id}: another process is resuming this run (it appended seq {seq} after "
        f"this process read the run); this process stopped and stored nothing more "
        f"(`clusterstore runs show {run_id}` shows the run's progress)"
    )


def test_the_loser_of_two_resumes_started_together_stores_nothing(
    store: EventStore, broken: tuple[UUID, str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, digest = broken
    head = store.head(run_id)
    stale = read_progress(store, run_id)  # the loser read the run before the winner wrote
    assert resume(store, run_id).digest == digest  # the winner
    before = log_snapshot(store)
    monkeypatch.setattr(clustering_runner, "read_progress", lambda *a: stale)
    result = CliRunner().invoke(cli, ["--db", db_url, "runs", "resume", str(run_id)])
    assert result.exit_code == 1
    assert result.output == f"Error: {message(run_id, head + 1)}\n"
    assert log_snapshot(store) == before  # no RunResumed, no RunFailed of the loser
    report = verify_run(store, run_id)
    assert report.ok and report.digest == digest


def test_a_resume_overtaken_by_another_stops_without_failing_the_run(
    store: EventStore, broken: tuple[UUID, str]
) -> None:
    """The second resume starts while the first is writing: it continues the run from where
    the first got to; the first then finds the second's events after its head, stops with
    ``ConcurrentWriterError`` and records no RunFailed (which would stop the second)."""
    run_id, digest = broken
    seen: list[int] = []

    class OvertakenAfter(FailAfter):
        @contextmanager
        def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
            def tick(n: int) -> None:
                if name.startswith("assigning"):
                    self.written += n
                    if self.written >= self.limit and not seen:
                        seen.append(store.head(run_id))
                        assert resume(store, run_id).digest == digest  # the other process

            yield tick

    with pytest.raises(ConcurrentWriterError) as info:
        resume(store, run_id, reporter=OvertakenAfter(200))
    assert str(info.value) == message(run_id, seen[0] + 1)
    assert isinstance(info.value, EventConflictError)  # still a conflict, for old callers
    events = [e.event for e in store.read(run_id)]
    assert [type(e) for e in events].count(RunFailed) == 1  # the original failure only
    assert [e.from_row for e in events if isinstance(e, RunResumed)] == [300, 500]
    report = verify_run(store, run_id)
    assert report.ok and report.digest == digest

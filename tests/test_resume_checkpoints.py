"""Resume in constant time (both backends): a run's writer stores a checkpoint at segment
boundaries, resume folds only the rows after it, and whatever the stopping points, batches
and noise, the completed run has the digest, sizes and noise of an uninterrupted run.
A checkpoint is never trusted alone: verify checks it against the log."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, inspect, update

from clusterstore.audit import verify_run
from clusterstore.benchmarks.resume_20m import Counting
from clusterstore.cli.main import cli
from clusterstore.eventstore import DatabaseBusyError, EventStore, EventStoreError, RunResumed
from clusterstore.eventstore.codec import pack_assignments
from clusterstore.eventstore.digest import SEGMENT_ROWS
from clusterstore.eventstore.runs import read_progress, resume_run, start_run
from clusterstore.eventstore.schema import checkpoints
from tests.audit_data import RUN_A, RUN_B, drop_triggers, make_run
from tests.digest_ref import reference_digest_v2, split
from tests.test_audit_verify import CASES, kinds

K = 5
SEG = SEGMENT_ROWS


def rows(lo: int, hi: int) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Input rows lo..hi-1: id = row, label (row * 7) % (K + 1) - 1 (-1: noise)."""
    r = np.arange(lo, hi, dtype=np.uint64)
    ids = np.zeros((hi - lo, 2), dtype=">u8")
    ids[:, 1] = r
    labels = ((r * 7) % (K + 1)).astype(np.int64) - 1
    return ids.view(np.uint8).reshape(-1, 16), labels, (r % 97).astype(np.float32)


def expected(n: int) -> tuple[str, list[int], int]:
    """(digest, cluster sizes, noise) of rows 0..n-1 recorded without interruption."""
    ids, labels, dist = rows(0, n)
    digest = reference_digest_v2(split(pack_assignments(ids, labels, dist).data))
    sizes = np.bincount(labels[labels >= 0], minlength=K)
    return digest, [int(x) for x in sizes], int((labels == -1).sum())


def start(store: EventStore, n: int, batch: int, **extra: Any) -> Any:
    w = start_run(
        store,
        model="m",
        algorithm="kmeans-l2",
        n_embeddings=n,
        dim=2,
        k=K,
        batch_size=batch,
        **extra,
    )
    w.record_centroids(np.zeros((K, 2)))
    return w


def stored_checkpoint(store: EventStore, run_id: uuid.UUID) -> tuple[int, int] | None:
    state = store.read_checkpoint(run_id)
    return None if state is None else (state.rows, state.seq)


# ---------------------------------------------------------------- kill and resume


N = 2 * SEG + 777  # three segments, the last one partial


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stops=st.lists(st.integers(1, N - 1), min_size=1, max_size=3, unique=True),
    batches=st.lists(st.integers(1_000, 12_000), min_size=4, max_size=4),
    failed=st.lists(st.booleans(), min_size=3, max_size=3),
    lost=st.lists(st.booleans(), min_size=8, max_size=8),
)
@example(stops=[SEG], batches=[4096, 4096, 4096, 4096], failed=[False] * 3, lost=[False] * 8)
@example(
    stops=[SEG - 1, SEG + 1],
    batches=[5000, 3000, 7000, 9000],
    failed=[True, False, True],
    lost=[False] * 8,
)
@example(
    stops=[2 * SEG], batches=[6000, 6000, 6000, 6000], failed=[False] * 3, lost=[True, False] * 4
)
def test_kill_and_resume_anywhere_gives_the_uninterrupted_run(
    store: EventStore,
    monkeypatch: pytest.MonkeyPatch,
    stops: list[int],
    batches: list[int],
    failed: list[bool],
    lost: list[bool],
) -> None:
    """Each stop ends the writer after that row (killed: nothing more appended; or failed:
    RunFailed); a stop inside a ``record`` call's batches is a kill mid-call. A lost
    checkpoint write (a kill between a batch's commit and its checkpoint) only makes resume
    fold more. Noise (-1) is among the labels."""
    writes = iter(lost * 1000)
    real_write = EventStore.write_checkpoint

    def maybe_lost(self: EventStore, run_id: uuid.UUID, state: Any) -> None:
        if not next(writes):
            real_write(self, run_id, state)

    monkeypatch.setattr(EventStore, "write_checkpoint", maybe_lost)
    stops = sorted(stops)
    writer = start(store, N, batches[0])
    run_id = writer.run_id
    done = 0
    for i, stop in enumerate([*stops, N]):
        if i:
            progress, writer = resume_run(store, run_id, batch_size=batches[i])
            assert progress.rows_done == done
        writer.record(*rows(done, stop))  # in batches of the writer's batch size
        done = stop
        if stop < N and failed[i]:
            writer.fail("stopped")
        checkpoint = stored_checkpoint(store, run_id)
        assert checkpoint is None or (checkpoint[0] <= done and checkpoint[0] % SEG == 0)
    completed = writer.complete()
    digest, sizes, noise = expected(N)
    assert (completed.count, completed.digest) == (N, digest)
    assert (completed.cluster_sizes, completed.n_noise) == (sizes, noise)
    markers = [e.event for e in store.read(run_id) if isinstance(e.event, RunResumed)]
    assert [m.from_row for m in markers] == stops
    report = verify_run(store, run_id)
    assert report.findings == [] and report.digest == digest


def test_an_uninterrupted_run_has_the_reference_digest(store: EventStore) -> None:
    writer = start(store, N, 10_000)
    writer.record(*rows(0, N))
    completed = writer.complete()
    assert completed.digest == expected(N)[0]
    assert stored_checkpoint(store, writer.run_id) == (2 * SEG, 2 + 2 * SEG)


# ---------------------------------------------------------------- reading only the tail


def test_resume_reads_only_the_rows_after_the_checkpoint(store: EventStore) -> None:
    n, stop = 5 * SEG, 4 * SEG + 3_000
    writer = start(store, n, 10_000)
    writer.record(*rows(0, stop))
    assert stored_checkpoint(store, writer.run_id) == (4 * SEG, 2 + 4 * SEG)
    reads = Counting(store)  # every read of a run's events: read_stream_pages or read_raw
    progress, resumed = resume_run(store, writer.run_id)
    # the preamble (a page of 8) and the checkpoint's own row, then the 3,000 after it
    assert progress.rows_done == stop
    assert reads.events <= 3_000 + 1 + 8
    resumed.record(*rows(stop, n))
    assert resumed.complete().digest == expected(n)[0]

    # without the checkpoint, the whole log is folded: same answer, every row read
    other = start(store, n, 10_000)
    other.record(*rows(0, stop))
    with store.transaction(write=True) as conn:
        conn.execute(delete(checkpoints).where(checkpoints.c.run_id == other.run_id))
    reads.events = 0
    progress, _ = read_progress(store, other.run_id)
    assert progress.rows_done == stop and reads.events >= stop


def test_version_1_runs_resume_by_the_whole_log_and_verify(store: EventStore) -> None:
    n = SEG + 100
    writer = start(store, n, 5_000, digest_version=1)
    writer.record(*rows(0, SEG + 10))
    assert store.read_checkpoint(writer.run_id) is None  # a sha256 state cannot be saved
    _, resumed = resume_run(store, writer.run_id)
    resumed.record(*rows(SEG + 10, n))
    completed = resumed.complete()
    ids, labels, dist = rows(0, n)
    assert completed.digest == hashlib.sha256(pack_assignments(ids, labels, dist).data).hexdigest()
    assert verify_run(store, writer.run_id).ok


# ---------------------------------------------------------------- a checkpoint is checked


def _tamper(store: EventStore, run_id: uuid.UUID, **values: Any) -> None:
    with store.transaction(write=True) as conn:
        conn.execute(update(checkpoints).where(checkpoints.c.run_id == run_id).values(**values))


TAMPERING = {
    "chain": {"chain": bytes(32)},
    "sizes": {"sizes": np.array([SEG, 0, 0, 0, 0], dtype="<i8").tobytes(), "n_noise": 0},
    "noise": {"n_noise": 1},
    "seq": {"seq": 2 + 2 * SEG + 5},  # a later assignment's seq
    "rows beyond the log": {"rows": 4 * SEG, "seq": 2 + 4 * SEG},
}
# the cases resume sees through (the checkpoint cannot be the run's): it folds the whole log
TAMPERING_IGNORED = {
    "chain": False,
    "sizes": True,
    "noise": True,
    "seq": False,
    "rows beyond the log": True,
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_tampered_checkpoint_is_found_and_never_accepted(store: EventStore, case: str) -> None:
    n, stop = 3 * SEG, 2 * SEG + 500
    writer = start(store, n, 10_000)
    writer.record(*rows(0, stop))
    run_id = writer.run_id
    assert verify_run(store, run_id).ok
    _tamper(store, run_id, **TAMPERING[case])
    report = verify_run(store, run_id)
    assert [(f.kind, f.run_id) for f in report.findings] == [("checkpoint_mismatch", run_id)]
    assert "resume checkpoint (cs_checkpoints) disagrees with the log" in report.findings[0].message
    # resume checks what it can cheaply (else it folds the whole log); a checkpoint that
    # passes those checks may make the resumed run record a wrong digest or sizes, or
    # conflict with the log: never a wrong run that verify accepts
    completed = None
    try:
        _, resumed = resume_run(store, run_id)
        resumed.record(*rows(resumed.rows_done, n))
        completed = resumed.complete()
    except EventStoreError:
        pass  # the log refused the rows it would have written
    digest, sizes, noise = expected(n)
    right = completed is not None and (
        completed.count,
        completed.digest,
        completed.cluster_sizes,
        completed.n_noise,
    ) == (n, digest, sizes, noise)
    final = verify_run(store, run_id)
    assert right or not final.ok, case
    if not right:
        assert "checkpoint_mismatch" in {f.kind for f in final.findings}
    assert right == TAMPERING_IGNORED[case]


def test_a_checkpoint_of_a_version_1_run_is_a_finding(store: EventStore) -> None:
    v2 = start(store, 2 * SEG, 10_000)
    v2.record(*rows(0, SEG + 1))
    v1 = start(store, 2 * SEG, 10_000, digest_version=1)
    v1.record(*rows(0, SEG + 1))
    state = store.read_checkpoint(v2.run_id)
    assert state is not None
    store.write_checkpoint(v1.run_id, state)
    (finding,) = verify_run(store, v1.run_id).findings
    assert finding.kind == "checkpoint_mismatch" and "digest version 1" in finding.message
    # and resume does not use it
    progress, _ = read_progress(store, v1.run_id)
    assert progress.rows_done == SEG + 1


def test_an_unusable_checkpoint_makes_resume_fold_the_whole_log(store: EventStore) -> None:
    n = 2 * SEG
    writer = start(store, n, 10_000)
    writer.record(*rows(0, SEG + 20))
    drop_triggers(store)  # not needed for cs_checkpoints, which is not append-only
    _tamper(store, writer.run_id, rows=SEG + 1)  # not a segment boundary
    _, resumed = resume_run(store, writer.run_id)
    assert resumed.rows_done == SEG + 20
    resumed.record(*rows(SEG + 20, n))
    assert resumed.complete().digest == expected(n)[0]


# ---------------------------------------------------------------- an older store


def _tables(store: EventStore) -> set[str]:
    with store.transaction() as conn:
        return set(inspect(conn).get_table_names())


def test_an_older_store_gets_the_table_when_opened_for_writing_only(db_url: str) -> None:
    with EventStore.open(db_url) as store:
        writer = start(store, SEG + 10, 5_000)
        writer.record(*rows(0, SEG + 5))
        with store.transaction(write=True) as conn:
            checkpoints.drop(conn)  # as a store made before the table existed
    with EventStore.open(db_url, create=False) as reader:
        assert "cs_checkpoints" not in _tables(reader)
        assert reader.read_checkpoint(writer.run_id) is None
        assert verify_run(reader, writer.run_id).ok
        assert "cs_checkpoints" not in _tables(reader)  # a command that reads adds nothing
    with EventStore.open(db_url) as store:  # `clusterstore init`, or any command that writes
        assert "cs_checkpoints" in _tables(store)
        _, resumed = resume_run(store, writer.run_id)  # no checkpoint: the whole log
        resumed.record(*rows(SEG + 5, SEG + 10))
        assert resumed.complete().digest == expected(SEG + 10)[0]


# ---------------------------------------------------------------- version 1 runs


@pytest.mark.parametrize("case", list(CASES))
def test_every_tampering_of_a_version_1_run_is_still_found(store: EventStore, case: str) -> None:
    """test_audit_verify's cases (runs of the current version) on runs of version 1."""
    tamper, want = CASES[case]
    make_run(store, RUN_A, digest_version=1)
    make_run(store, RUN_B, seed=1, digest_version=1)
    assert verify_run(store, RUN_A).ok
    drop_triggers(store)
    tamper(store)
    assert kinds(store) == want
    assert verify_run(store, RUN_B).ok


def test_runs_verify_names_the_run_of_a_tampered_checkpoint(store: EventStore, db_url: str) -> None:
    writer = start(store, 2 * SEG, 10_000)
    writer.record(*rows(0, SEG + 1))
    _tamper(store, writer.run_id, chain=b"\x01" * 32)
    result = CliRunner().invoke(cli, ["--db", db_url, "runs", "verify", str(writer.run_id)])
    assert result.exit_code == 1
    assert result.stdout.startswith(
        f"{writer.run_id}: the run's resume checkpoint (cs_checkpoints) disagrees with the log: "
        f"its digest chain after {SEG} assignments differs from the log's"
    )
    data = json.loads(
        CliRunner()
        .invoke(cli, ["--db", db_url, "runs", "verify", str(writer.run_id), "--json"])
        .stdout
    )
    assert [(f["kind"], f["run_id"]) for f in data["runs"][0]["findings"]] == [
        ("checkpoint_mismatch", str(writer.run_id))
    ]


def test_a_busy_database_skips_a_checkpoint_never_the_run(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(run_id: uuid.UUID, state: Any) -> None:
        raise DatabaseBusyError("other writers hold the database")

    monkeypatch.setattr(store, "write_checkpoint", busy)
    writer = start(store, 2 * SEG, 10_000)
    writer.record(*rows(0, 2 * SEG))
    assert writer.complete().digest == expected(2 * SEG)[0]
    assert store.read_checkpoint(writer.run_id) is None

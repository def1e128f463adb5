"""Projections under faults: SIGKILL mid-batch, readers during a rebuild, (PostgreSQL)
concurrent writers with rolled-back transactions while a follower runs, and a damaged event,
which isolates its run instead of stopping the read models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from msgspec.structs import replace
from sqlalchemy import create_engine, text

from clusterstore import projections
from clusterstore.cli.main import cli as main
from clusterstore.clustering.record import record_labels
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.runs import read_progress
from clusterstore.projections.dead_letter import REPAIR
from clusterstore.projections.schema import ec_tables
from tests.audit_data import delete_row, drop_triggers, set_payload, stored_payload
from tests.contracts.support import started
from tests.pj_util import make_run, physical_tables, query, snapshot, truth

# A child that runs a projection and freezes inside batch number argv[3] (after the rows
# are written, before the commit), so the parent can SIGKILL it mid-batch.
FREEZE_IN_BATCH = r"""
import sys, time
from clusterstore import projections
from clusterstore.eventstore import EventStore
from clusterstore.projections.embeddingcluster import EmbeddingClusterProjection as P

original = P.apply
calls = 0

def apply(self, conn, generation, blocks):
    global calls
    original(self, conn, generation, blocks)
    calls += 1
    if calls == int(sys.argv[3]):
        print("inside batch", flush=True)
        time.sleep(300)

P.apply = apply
store = EventStore.open(sys.argv[1])
if sys.argv[4] == "rebuild":
    projections.rebuild(store, ["embeddingcluster"], batch_events=int(sys.argv[2]))
else:
    projections.catch_up(store, ["embeddingcluster"], batch_events=int(sys.argv[2]))
print("finished", flush=True)
"""


def kill_inside_batch(db_url: str, env: dict[str, str], batch: int, nth: int, mode: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", FREEZE_IN_BATCH, db_url, str(batch), str(nth), mode],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "inside batch\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def assert_exactly_once(store: EventStore) -> None:
    """Every assignment of the log is in the table once, and sizes count each once."""
    log = truth(store)
    for run_id, progress in log.items():
        done = progress.completed
        expected = (done.count, done.digest) if done is not None else None
        assert projections.read_model_digest(store, run_id) == expected
    gen = next(s.generation for s in projections.status(store) if s.name == "embeddingcluster")
    assert gen is not None
    t = ec_tables(gen)
    total = sum(p.rows_done for p in log.values())
    assert query(store, f"SELECT count(*) FROM {t.assignments.name}") == [(total,)]
    assert query(store, f"SELECT sum(size) FROM {t.clusters.name}") == [(total,)]


def test_sigkill_mid_batch_then_restart_applies_everything_once(
    store: EventStore, db_url: str, subprocess_env: dict[str, str]
) -> None:
    for seed in range(3):
        make_run(store, 400, seed=seed, batch_size=50)
    make_run(store, 400, seed=9, recorded=170, fail=True, batch_size=50)

    kill_inside_batch(db_url, subprocess_env, batch=250, nth=3, mode="catch-up")

    state = {s.name: s for s in projections.status(store)}["embeddingcluster"]
    assert state.checkpoint == 500  # two batches committed, the third rolled back
    gen = state.generation
    assert gen is not None
    in_log = sum(1 for ev in store.feed(limit=500) if ev.type == 3)
    table = ec_tables(gen).assignments.name
    assert query(store, f"SELECT count(*) FROM {table}") == [(in_log,)]

    assert projections.catch_up(store, ["embeddingcluster"], wait=30)["embeddingcluster"] > 0
    assert_exactly_once(store)


def test_sigkill_during_rebuild_leaves_the_old_read_model(
    store: EventStore, db_url: str, subprocess_env: dict[str, str]
) -> None:
    for seed in range(2):
        make_run(store, 300, seed=seed, batch_size=40)
    projections.catch_up_all(store)
    before = snapshot(store)

    kill_inside_batch(db_url, subprocess_env, batch=100, nth=4, mode="rebuild")

    assert snapshot(store) == before  # readers still see generation 1, complete
    # the half-built generation stays until the next rebuild, unless it was loaded in the
    # transaction that would have swapped it in (then the kill rolled it back)
    half_built = "pj_ec_assignment_g2" in physical_tables(store)
    assert half_built is not store.rebuild_in_one_transaction
    done = projections.rebuild(store, ["embeddingcluster"])["embeddingcluster"]
    assert done.generation == 2
    assert snapshot(store) == before
    assert {t for t in physical_tables(store) if t.startswith("pj_ec_")} == {
        "pj_ec_run_g2",
        "pj_ec_assignment_g2",
        "pj_ec_cluster_g2",
    }
    assert_exactly_once(store)


READ = (
    "SELECT count(*), count(DISTINCT clustering_result_id), sum(cluster), "
    "count(DISTINCT id) FROM embeddingcluster"
)


def test_readers_never_see_an_empty_or_partial_table_during_rebuild(store: EventStore) -> None:
    for seed in range(4):
        make_run(store, 300, seed=seed, batch_size=100)
    make_run(store, 50, seed=7, recorded=20)  # running: never visible
    projections.catch_up_all(store)
    baseline = query(store, READ)[0]
    assert baseline[:2] == (1200, 4)

    reader = create_engine(store.recorder.url)
    seen: list[tuple[Any, ...]] = []
    during: list[tuple[Any, ...]] = []
    stop = threading.Event()

    def read_once() -> tuple[Any, ...]:
        with reader.connect() as conn:
            return tuple(conn.execute(text(READ)).one())

    def keep_reading() -> None:
        while not stop.is_set():
            seen.append(read_once())

    thread = threading.Thread(target=keep_reading)
    thread.start()
    try:
        for _ in range(3):
            projections.rebuild(
                store,
                ["embeddingcluster"],
                batch_events=97,
                on_progress=lambda n: during.append(read_once()),
            )
    finally:
        stop.set()
        thread.join(timeout=60)
        reader.dispose()
    assert len(during) >= 3 * 13  # a read after every committed shadow batch
    assert set(during) == {baseline}
    assert seen and set(seen) == {baseline}


# A writer process: runs with appends that randomly roll back (an error inside the append
# transaction, after the commit position was taken), failed runs, and resumed runs.
WRITER = r"""
import random, sys
import numpy as np
from clusterstore.eventstore import EventStore, EventStoreError
from clusterstore.eventstore.postgres import PostgresRecorder
from clusterstore.eventstore.runs import resume_run, start_run

rng = random.Random(int(sys.argv[2]))
original = PostgresRecorder._after_append

def flaky(self, conn, position):
    original(self, conn, position)
    if rng.random() < 0.15:
        conn.exec_driver_sql("SELECT 1/0")  # the whole append rolls back

PostgresRecorder._after_append = flaky
store = EventStore.open(sys.argv[1])
N = 60
started = []
for i in range(int(sys.argv[3])):
    gen = np.random.default_rng(rng.randrange(1 << 30))
    data = (np.frombuffer(gen.bytes(16 * N), dtype="V16"), gen.integers(0, 3, N), gen.random(N))
    try:
        writer = start_run(store, model="w", algorithm="kmeans-l2", n_embeddings=N, dim=2,
                           k=3, batch_size=10)
    except EventStoreError:
        continue
    started.append((writer.run_id, data))
    try:
        with writer:
            writer.record(*data)
    except EventStoreError:
        pass
for run_id, (ids, labels, dist) in started:
    if rng.random() < 0.5:
        continue
    for attempt in range(6):
        try:
            progress, writer = resume_run(store, run_id, batch_size=10)
            done = progress.rows_done
            writer.record(ids[done:], labels[done:], dist[done:])
            writer.complete()
            break
        except EventStoreError as e:
            if "already completed" in str(e):
                break
"""


@pytest.mark.postgres_only
def test_follower_with_concurrent_writers_holds_exactly_the_completed_runs(
    store: EventStore, db_url: str, subprocess_env: dict[str, str]
) -> None:
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusterstore",
            "--db",
            db_url,
            "projections",
            "catch-up",
            "--follow",
            "--quiet",
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, db_url, str(seed), "6"], env=subprocess_env
            )
            for seed in range(3)
        ]
        assert [w.wait(timeout=600) for w in writers] == [0, 0, 0]
        # the follower holds both projections: this waits until it has reached the head
        assert projections.catch_up(store, wait=120) == {
            "clusteringresult": 0,
            "embeddingcluster": 0,
        }
        states = projections.status(store)
        assert [(s.lag, s.runner is not None) for s in states] == [(0, True), (0, True)]
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert (follower.returncode, out, err) == (0, "", "")

    log = truth(store)
    completed = {run for run, p in log.items() if p.completed is not None}
    assert completed and len(completed) < len(log)  # the scenario made both kinds
    visible = {
        uuid.UUID(str(r))
        for (r,) in query(store, "SELECT DISTINCT clustering_result_id FROM embeddingcluster")
    }
    assert visible == completed
    assert_exactly_once(store)
    statuses = dict(query(store, "SELECT run_id, status FROM clusteringresult"))
    assert {uuid.UUID(str(k)) for k, v in statuses.items() if v == "completed"} == completed


# ---------------------------------------------------------------- a damaged event (issue 16)
# A damaged event isolates its run: the projections skip that run from the damaged event on,
# record it (dead letter) and keep going for every other run; a rebuild after the repair
# brings it back. make_run(store, 40): seq 1 RunStarted, 2 CentroidsComputed, 3-42
# assignments, 43 RunCompleted: 43 events per run.
RUN_EVENTS = 43


def three_runs_b_damaged(store: EventStore, seq: int, payload: bytes = b"\xc1") -> Any:
    """Runs A, B, C (C recorded after B was damaged at ``seq``); returns (a, b, c, the
    original payload)."""
    a = make_run(store, 40, seed=1)
    b = make_run(store, 40, seed=2)
    drop_triggers(store)
    original = stored_payload(store, b, seq)
    set_payload(store, b, seq, payload)
    c = make_run(store, 40, seed=3)
    return a, b, c, original


def results(store: EventStore) -> dict[uuid.UUID, tuple[Any, ...]]:
    found = query(store, "SELECT run_id, status, n_assignments, model, error FROM clusteringresult")
    return {uuid.UUID(str(r[0])): tuple(r[1:]) for r in found}


def visible_runs(store: EventStore) -> set[uuid.UUID]:
    found = query(store, "SELECT DISTINCT run_id FROM embeddingcluster")
    return {uuid.UUID(str(r)) for (r,) in found}


@pytest.mark.parametrize("batch", [projections.runner.BATCH_EVENTS, 7])
def test_a_damaged_event_isolates_its_run(store: EventStore, batch: int) -> None:
    a, b, c, _ = three_runs_b_damaged(store, 20)
    heard: list[projections.DeadLetter] = []
    applied = projections.catch_up(store, batch_events=batch, on_damage=heard.append)

    head = store.max_position()
    assert head == 3 * RUN_EVENTS
    assert applied == {"clusteringresult": head, "embeddingcluster": head}
    assert [s.checkpoint for s in projections.status(store)] == [head, head]
    position = RUN_EVENTS + 20
    expected = [
        ("clusteringresult", b, 20, position),
        ("embeddingcluster", b, 20, position),
    ]
    assert [(d.projection, d.run_id, d.seq, d.position) for d in heard] == expected
    letters = projections.dead_letters(store)
    assert [(d.projection, d.run_id, d.seq, d.position) for d in letters] == expected
    assert letters[0].reason.startswith("AssignmentRecorded payload does not decode")

    # B's events before seq 20 are applied (17 assignments), nothing from seq 20 on
    rows = results(store)
    assert rows[a][:2] == rows[c][:2] == ("completed", 40)
    assert rows[b][:3] == ("damaged", 17, "m")
    assert rows[b][3].startswith("damaged at seq 20: AssignmentRecorded payload does not")
    assert visible_runs(store) == {a, c}
    for run in (a, c):
        done = read_progress(store, run)[0].completed
        assert done is not None
        assert projections.read_model_digest(store, run) == (done.count, done.digest)
    gen = projections.status(store)[1].generation
    assert gen is not None
    table = ec_tables(gen).assignments.name
    assert query(
        store, f"SELECT run_key, count(*) FROM {table} GROUP BY run_key ORDER BY run_key"
    ) == [
        (1, 40),
        (2, 17),
        (3, 40),
    ]
    # the same read models as a rebuild (which batch boundaries fell where changes nothing)
    before = snapshot(store)
    projections.rebuild(store)
    assert snapshot(store) == before
    assert len(projections.dead_letters(store)) == 2


def test_a_repaired_event_comes_back_with_a_rebuild(store: EventStore) -> None:
    _, b, _, original = three_runs_b_damaged(store, 20)
    projections.catch_up(store)
    set_payload(store, b, 20, original)  # an operator restores the row from a backup
    # the checkpoint is past the run: a catch-up has nothing to apply, the run stays skipped
    assert projections.catch_up(store) == {"clusteringresult": 0, "embeddingcluster": 0}
    assert results(store)[b][0] == "damaged"
    heard: list[projections.DeadLetter] = []
    projections.rebuild(store, on_damage=heard.append)
    assert heard == [] and projections.dead_letters(store) == []
    assert results(store)[b][:2] == ("completed", 40)
    assert_exactly_once(store)


def test_a_damaged_run_start_still_gets_a_row(store: EventStore) -> None:
    a, b, c, _ = three_runs_b_damaged(store, 1)
    projections.catch_up(store)
    rows = results(store)
    assert rows[b][:3] == ("damaged", 0, None)
    assert rows[b][3].startswith("damaged at seq 1: RunStarted payload does not decode")
    assert visible_runs(store) == {a, c}
    assert {d.position for d in projections.dead_letters(store)} == {RUN_EVENTS + 1}


def test_a_missing_assignment_row_isolates_its_run(store: EventStore) -> None:
    """A deleted assignment row: embeddingcluster's block read does not add up (it reads
    the payloads), so it skips the run from that commit on; clusteringresult only counts."""
    a = make_run(store, 40, seed=1, batch_size=10)
    b = make_run(store, 40, seed=2, batch_size=10)
    drop_triggers(store)
    delete_row(store, b, 25)
    c = make_run(store, 40, seed=3, batch_size=10)
    projections.catch_up(store)
    letters = projections.dead_letters(store)
    assert [(d.projection, d.run_id) for d in letters] == [("embeddingcluster", b)]
    assert "do not add up" in letters[0].reason
    assert visible_runs(store) == {a, c}
    assert results(store)[b][0] == "completed"  # the log's own word; verify names the hole


def test_a_follower_goes_on_past_a_damaged_run(store: EventStore) -> None:
    a, b, c, _ = three_runs_b_damaged(store, 20)
    heard: list[projections.DeadLetter] = []
    projections.follow(store, stop=lambda: True, on_damage=heard.append)
    assert {d.run_id for d in heard} == {b}
    assert visible_runs(store) == {a, c}
    d = make_run(store, 5, seed=4)
    projections.follow(store, stop=lambda: True, on_damage=heard.append)
    assert visible_runs(store) == {a, c, d}
    assert len(heard) == 2  # B is reported once per projection, not again


# An event that decodes but holds a value the read models cannot store, written through the
# library: before, clusteringresult's batch failed on it (PostgreSQL: "text fields cannot
# contain NUL", "bigint out of range"; SQLite: OverflowError past 64 bits), and every later
# catch-up stopped there for every run.
def nul_in_the_model(store: EventStore) -> uuid.UUID:
    rng = np.random.default_rng(7)
    ids = [uuid.UUID(bytes=rng.bytes(16)) for _ in range(5)]
    return record_labels(store, ids, rng.integers(0, 2, 5), model="m\x00x", algorithm="hdbscan")


def seed_beyond_64_bits(store: EventStore) -> uuid.UUID:
    run = uuid.uuid4()
    store.append(run, [replace(started(), seed=2**64 - 1)], expected_seq=0)
    return run


UNSTORABLE = {
    "a NUL in the model name": (
        nul_in_the_model,
        "RunStarted model holds a NUL character (U+0000), which the read models cannot store",
    ),
    "a seed beyond 64 bits": (
        seed_beyond_64_bits,
        "RunStarted seed 18446744073709551615 is beyond the 64-bit integers the read models store",
    ),
}


@pytest.mark.parametrize("case", list(UNSTORABLE))
def test_an_event_the_read_models_cannot_store_isolates_its_run(
    store: EventStore, db_url: str, case: str
) -> None:
    write, reason = UNSTORABLE[case]
    a = make_run(store, 40, seed=1)
    b = write(store)
    c = make_run(store, 40, seed=3)
    cli = CliRunner(env={"CLUSTERSTORE_DB": None})
    caught = cli.invoke(main, ["--db", db_url, "projections", "catch-up", "-q"])
    assert caught.exit_code == 0, caught.output
    assert caught.stderr == (
        f"Warning: run {b} is damaged at seq 1 (log position {RUN_EVENTS + 1}): {reason}; "
        "the read models (clusteringresult) skip the run from there and go on with the "
        f"others; {REPAIR}\n"
    )
    rows = results(store)
    assert rows[a][:2] == rows[c][:2] == ("completed", 40)
    assert rows[b][0] == "damaged" and rows[b][3] == f"damaged at seq 1: {reason}"
    for run in (a, c):
        done = read_progress(store, run)[0].completed
        assert done is not None
        assert projections.read_model_digest(store, run) == (done.count, done.digest)
    verified = cli.invoke(main, ["--db", db_url, "runs", "verify", str(b)])
    assert verified.exit_code == 1
    assert (
        f"{b} seq 1: the read models skip the run from this event on ({reason}), but the log "
        "reads whole now (repaired?); "
    ) in verified.stdout
    assert cli.invoke(main, ["--db", db_url, "runs", "verify", str(c)]).exit_code == 0
    before = snapshot(store)  # a rebuild skips the same run
    projections.rebuild(store)
    assert snapshot(store) == before

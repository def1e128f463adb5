"""A full disk during the projection step of ``cluster``: the run is stored, the command
warns that the read models are behind and exits 0, the lock is released, and a later
catch-up (once there is space again) brings the read models up to date.

The disk really fills on SQLite: the store lives on a small tmpfs mounted in a private
mount namespace (``unshare -m``; skipped where that is not allowed), and the child fills it
when the projection step starts, leaving less room than the batch needs, so SQLite's
COMMIT fails with SQLITE_FULL. On PostgreSQL (whose disk is shared) the batch's COMMIT
fails with the server's ``disk_full`` SQLSTATE, raised by a deferred constraint trigger on
the read model's table: the same place and the same error class a full disk gives.

A full disk during the run's own appends (``cluster``, ``import-legacy``): the command
fails with one ``Error:`` line that names the run and ends with how to go on once there is
space; going on completes the run with the digest of an uninterrupted one. The disk fills
the same ways: on SQLite when the Nth append starts, on PostgreSQL from a trigger on the
log's table once the run's seq passes a bound.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.clustering.record import record_labels
from clusterstore.eventstore import EventStore, RunCompleted
from clusterstore.eventstore.errors import DiskFullError
from clusterstore.projections.schema import ec_tables
from tests.test_cli_cluster import blobs
from tests.test_legacy_import import build_legacy, check_imported, sqlite_path

N = 20_000
WARNING = "Warning: the log is written, but the read models are not up to date: "

# PostgreSQL: a trigger function that fails as a full disk does (SQLSTATE disk_full)
DISK_FULL_FUNCTION = (
    "CREATE FUNCTION cs_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
    "USING ERRCODE = 'disk_full'; END $$"
)

# Fills the file system of argv[1], leaving argv[2] bytes free, when argv[3] says: at
# "project" when the first projection batch is applied, at "append:N" when the Nth append
# to the log starts; then runs the CLI with the remaining arguments.
FILL_THEN_CLI = r"""
import os, sys
from clusterstore.eventstore.store import EventStore
from clusterstore.projections.embeddingcluster import EmbeddingClusterProjection as P

filler, leave, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = []

def fill():
    if not os.path.exists(filler):
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        os.close(fd)

def filling_first(cls, name, now):
    original = getattr(cls, name)
    def method(*args, **kwargs):
        if now():
            fill()
        return original(*args, **kwargs)
    setattr(cls, name, method)

if when == "project":
    filling_first(P, "apply", lambda: True)
else:
    nth = int(when.removeprefix("append:"))
    filling_first(EventStore, "append", lambda: calls.append(1) or len(calls) == nth)
from clusterstore.cli.main import cli
cli(sys.argv[4:], prog_name="clusterstore")
"""

# In a private mount namespace: a 6 MB tmpfs at $1 (holding a copy of the store in $SEED, if
# set), the CLI child run there, the store copied out to $2 (with its -wal) for the parent to
# inspect. Exit 77: no tmpfs here.
IN_TMPFS = r"""
mount -t tmpfs -o size=6m tmpfs "$1" || exit 77
if [ -n "$SEED" ]; then cp "$SEED"/store.db* "$1"/; fi
shift; out="$1"; shift
"$@"; rc=$?
cp "$MNT"/store.db* "$out"/
exit $rc
"""


def in_a_filling_tmpfs(
    tmp_path: Path,
    env: dict[str, str],
    leave: int,
    when: str,
    args: list[str],
    seed: Path | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The CLI with ``args`` on a store in a small tmpfs that fills up ``when``
    (``FILL_THEN_CLI``, leaving ``leave`` bytes); the finished process and where the
    store was copied out to. ``seed``: a SQLite store copied in first."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    child = [sys.executable, "-c", FILL_THEN_CLI, str(mnt / "filler"), str(leave), when]
    namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_TMPFS, "sh"]
    result = subprocess.run(
        [*namespace, str(mnt), str(out), *child, "--db", str(mnt / "store.db"), *args],
        capture_output=True,
        text=True,
        env={**env, "MNT": str(mnt), "SEED": "" if seed is None else str(seed.parent)},
        timeout=300,
    )
    if result.returncode == 77 or "unshare" in result.stderr.split(":")[0]:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return result, out / "store.db"


def run_with_a_full_disk(tmp_path: Path, env: dict[str, str], leave: int) -> tuple[Path, str]:
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(N))
    args = ["cluster", str(emb), "--model", "m", "--k", "3", "--seed", "1", "-q"]
    result, path = in_a_filling_tmpfs(tmp_path, env, leave, "project", args)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), result.stderr
    assert "the database's disk is full" in lines[0]
    assert lines[0].endswith("; `clusterstore projections catch-up` retries")
    return path, result.stdout.strip()


def lock_rows(store: EventStore) -> list[tuple[str, int]]:
    with store.transaction() as c:
        return [tuple(r) for r in c.execute(text("SELECT name, pid FROM pj_lock")).all()]


def assert_caught_up_later(store: EventStore, run_id: str) -> None:
    """The run is stored and complete; the read model is behind until a catch-up."""
    run = store.resolve_run(run_id)
    assert projections.read_model_digest(store, run) is None
    projections.catch_up(store)
    assert projections.read_model_digest(store, run) is not None
    assert projections.first_read_model_difference(store, run) is None


def test_full_disk_in_the_projection_step(
    backend: str, db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    if backend == "sqlite":
        # 256 KiB left: the batch's COMMIT runs out of room part-way (the WAL grows by
        # more than that), and the lock row's DELETE then fits in the space it took
        path, run_id = run_with_a_full_disk(tmp_path, subprocess_env, leave=256 * 1024)
        with EventStore.open(str(path)) as store:
            assert lock_rows(store) == []  # released, not left behind
            assert store.runs()[0].head == N + 3  # RunStarted, centroids, N rows, RunCompleted
            assert_caught_up_later(store, run_id)
        return
    with EventStore.open(db_url) as store:  # the read-model tables exist, then fill up
        projections.catch_up(store)
        table = ec_tables(1).assignments.name
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text(DISK_FULL_FUNCTION))
        c.execute(
            text(
                f"CREATE CONSTRAINT TRIGGER cs_test_disk_full AFTER INSERT ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cs_test_disk_full()"
            )
        )
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(N))
    result = CliRunner().invoke(
        cli,
        ["--db", db_url, "cluster", str(emb), "--model", "m", "--k", "3", "--seed", "1", "-q"],
        env={"CLUSTERSTORE_DB": None},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), result.stderr
    assert "the database's disk is full (could not extend file" in lines[0]
    with engine.begin() as c:
        c.execute(text(f"DROP TRIGGER cs_test_disk_full ON {table}"))
    engine.dispose()
    with EventStore.open(db_url) as store:
        assert all(s.runner is None for s in projections.status(store))  # lock released
        assert store.runs()[0].head == N + 3  # RunStarted, centroids, N rows, RunCompleted
        assert_caught_up_later(store, result.stdout.strip())


BATCH = 2_000  # rows per append of the run


@contextmanager
def disk_full_past(db_url: str, seq: int) -> Iterator[None]:
    """PostgreSQL: an append of a seq above ``seq`` fails with ``disk_full`` until the
    block ends (there is space again)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(text(DISK_FULL_FUNCTION))
            c.execute(
                text(
                    "CREATE TRIGGER cs_test_disk_full AFTER INSERT ON cs_events FOR EACH ROW "
                    f"WHEN (NEW.seq > {seq}) EXECUTE FUNCTION cs_test_disk_full()"
                )
            )
        yield
    finally:
        with engine.begin() as c:
            c.execute(text("DROP TRIGGER IF EXISTS cs_test_disk_full ON cs_events"))
        engine.dispose()


def stopped_by_a_full_disk(
    backend: str,
    db_url: str,
    tmp_path: Path,
    env: dict[str, str],
    args: list[str],
    *,
    nth_append: int,
    past_seq: int,
    seed: Path | None = None,
) -> tuple[str, str]:
    """The CLI with ``args``, the disk filling at the ``nth_append`` (SQLite: on a copy of
    the store ``seed``, if given) or past seq ``past_seq`` (PostgreSQL); asserts it failed
    with one ``Error:`` line and returns the store's location (with space again) and that
    line."""
    if backend == "sqlite":
        # 16 KiB left: a batch of BATCH rows does not fit
        when = f"append:{nth_append}"
        result, path = in_a_filling_tmpfs(tmp_path, env, 16 * 1024, when, args, seed)
        code, stderr, db = result.returncode, result.stderr, str(path)
    else:
        EventStore.open(db_url).close()
        with disk_full_past(db_url, past_seq):
            invoked = CliRunner().invoke(
                cli, ["--db", db_url, *args], env={"CLUSTERSTORE_DB": None}
            )
        code, stderr, db = invoked.exit_code, invoked.stderr, db_url
    lines = stderr.splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "the database's disk is full (" in lines[0]
    return db, lines[0]


@pytest.mark.parametrize("command", ["cluster", "assign"])
def test_full_disk_during_the_runs_appends_then_resume(
    backend: str, db_url: str, tmp_path: Path, subprocess_env: dict[str, str], command: str
) -> None:
    """Before: the error ended "free some space and retry"; a retry is a new run, and the
    stopped one was left incomplete without a word."""
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(N))
    runner = CliRunner(env={"CLUSTERSTORE_DB": None})
    seed, db = None, db_url
    if command == "cluster":
        args = ["cluster", str(emb), "--model", "m", "--k", "3", "--seed", "1"]
    else:  # the parent run's centroids label the rows
        np.save(tmp_path / "parent.npy", blobs(3_000))
        if backend == "sqlite":
            (tmp_path / "seed").mkdir()
            seed = db = tmp_path / "seed" / "store.db"
        made = ["cluster", str(tmp_path / "parent.npy"), "--model", "m", "--k", "3"]
        parent = runner.invoke(cli, ["--db", str(db), *made, "--seed", "1", "--json"])
        assert parent.exit_code == 0, parent.output
        args = ["assign", json.loads(parent.stdout)["run_id"], str(emb)]
    args += ["--batch-size", str(BATCH)]
    stopped, error = stopped_by_a_full_disk(
        backend,
        db_url,
        tmp_path,
        subprocess_env,
        [*args, "-q"],
        nth_append=5,
        past_seq=2 + 2 * BATCH,
        seed=seed,
    )
    with EventStore.open(stopped) as store:
        run = store.runs()[-1]
        assert 2 + 2 * BATCH <= run.head < 2 + N  # whole batches kept, the run incomplete
    assert error.endswith(
        f"; run {run.run_id} is stored up to its last complete batch; free some space, then "
        f"`clusterstore runs resume {run.run_id}`"
    ), error
    resumed = runner.invoke(cli, ["--db", stopped, "runs", "resume", str(run.run_id), "--json"])
    assert resumed.exit_code == 0, resumed.output
    whole = runner.invoke(cli, ["--db", stopped, *args, "--json"])
    assert whole.exit_code == 0, whole.output
    out, reference = json.loads(resumed.stdout), json.loads(whole.stdout)
    assert (out["status"], out["n_assignments"]) == ("completed", N)
    assert 2 * BATCH <= out["resumed_from"] < N
    assert out["assignment_digest"] == reference["assignment_digest"]


@pytest.mark.postgres_only
def test_full_disk_during_a_recording_says_it_is_recorded_again(db_url: str) -> None:
    """``record`` cannot resume a run: the error says to record the labels again."""
    rng = np.random.default_rng(0)
    ids = [uuid.UUID(bytes=rng.bytes(16)) for _ in range(N)]
    with EventStore.open(db_url) as store, disk_full_past(db_url, 1 + 2 * BATCH):
        with pytest.raises(DiskFullError) as info:
            record_labels(
                store, ids, rng.integers(0, 3, N), model="m", algorithm="hdbscan", batch_size=BATCH
            )
        (run,) = store.runs()
    assert str(info.value).endswith(
        f"; run {run.run_id} is stored up to its last complete batch; free some space, then "
        "run the command again (a new run: this one cannot be resumed)"
    )


def test_full_disk_during_an_import_then_import_again(
    backend: str, db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    legacy = build_legacy(f"sqlite:///{tmp_path / 'legacy.db'}")
    args = ["import-legacy", sqlite_path(legacy.url), "-q"]
    # the rows of a result of 100 rows or more do not fit (RunStarted does)
    db, error = stopped_by_a_full_disk(
        backend, db_url, tmp_path, subprocess_env, args, nth_append=2, past_seq=100
    )
    found = re.search(r"; run ([0-9a-f-]{36}) is stored up to its last complete batch; ", error)
    assert found and error.endswith(
        "free some space, then run the import again: it finishes this run"
    ), error
    run_id = uuid.UUID(found[1])
    assert run_id in legacy.rows
    with EventStore.open(db) as store:
        *_, last = store.read(run_id)
        assert not isinstance(last.event, RunCompleted)  # left incomplete
        again = CliRunner().invoke(cli, ["--db", db, *args], env={"CLUSTERSTORE_DB": None})
        assert again.exit_code == 0, again.output
        check_imported(store, legacy)

"""A full disk during the projection step of ``cluster``: the run is stored, the command
warns that the read models are behind and exits 0, the lock is released, and a later
catch-up (once there is space again) brings the read models up to date.

The disk really fills on SQLite: the store lives on a small tmpfs mounted in a private
mount namespace (``unshare -m``; skipped where that is not allowed), and the child fills it
when the projection step starts, leaving less room than the batch needs, so SQLite's
COMMIT fails with SQLITE_FULL. On PostgreSQL (whose disk is shared) the batch's COMMIT
fails with the server's ``disk_full`` SQLSTATE, raised by a deferred constraint trigger on
the read model's table: the same place and the same error class a full disk gives.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from clusterstore.projections.schema import ec_tables
from tests.test_cli_cluster import blobs

N = 20_000
WARNING = "Warning: the log is written, but the read models are not up to date: "

# Fills the file system of argv[1] when the first projection batch is applied, leaving
# argv[2] bytes free, then runs the CLI with the remaining arguments.
FILL_THEN_CLI = r"""
import os, sys
from clusterstore.projections.embeddingcluster import EmbeddingClusterProjection as P

filler, leave = sys.argv[1], int(sys.argv[2])
original = P.apply

def apply(self, conn, generation, blocks):
    if not os.path.exists(filler):
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        os.close(fd)
    original(self, conn, generation, blocks)

P.apply = apply
from clusterstore.cli.main import cli
cli(sys.argv[3:], prog_name="clusterstore")
"""

# In a private mount namespace: a 6 MB tmpfs at $1, the CLI child run there, the store copied
# out to $2 (with its -wal) for the parent to inspect. Exit 77: no tmpfs here.
IN_TMPFS = r"""
mount -t tmpfs -o size=6m tmpfs "$1" || exit 77
shift; out="$1"; shift
"$@"; rc=$?
cp "$MNT"/store.db* "$out"/
exit $rc
"""


def run_with_a_full_disk(tmp_path: Path, env: dict[str, str], leave: int) -> tuple[Path, str]:
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(N))
    child = [sys.executable, "-c", FILL_THEN_CLI, str(mnt / "filler"), str(leave)]
    cli_args = ["--db", str(mnt / "store.db"), "cluster", str(emb), "--model", "m", "--k", "3"]
    namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_TMPFS, "sh"]
    result = subprocess.run(
        [*namespace, str(mnt), str(out), *child, *cli_args, "--seed", "1", "-q"],
        capture_output=True,
        text=True,
        env={**env, "MNT": str(mnt)},
        timeout=300,
    )
    if result.returncode == 77 or "unshare" in result.stderr.split(":")[0]:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), result.stderr
    assert "the database's disk is full" in lines[0]
    assert lines[0].endswith("; `clusterstore projections catch-up` retries")
    return out / "store.db", result.stdout.strip()


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
        if shutil.which("unshare") is None:
            pytest.skip("no unshare")
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
        c.execute(
            text(
                "CREATE FUNCTION cs_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = 'disk_full'; END $$"
            )
        )
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

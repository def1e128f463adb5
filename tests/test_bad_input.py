"""The bad-input battery: every wrong file, option, run id or database location is answered
by one ``Error: ...`` line and a non-zero exit, never a traceback, and leaves the log
byte-for-byte as it was (every row of cs_events, cs_commits and cs_runs compared).

``CASES`` run against a store that already holds a completed and a failed run, on both
backends (the store is built once per backend; each case compares the log before/after).
The database-location cases follow (``--db`` a directory, a file of another kind, another
application's database, a read-only file or mount, an unreachable server).

Exit 1 is a refused input (``Error: <message>`` alone on stderr); exit 2 is click's usage
error, where the ``Error:`` line follows click's ``Usage:``/``Try`` lines. A message
ending in ``...`` is a prefix (the rest comes from numpy or the driver). Parquet inputs
have their own battery in test_clustering_parquet.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from clusterstore.cli.main import cli
from clusterstore.clustering import ClusterSettings, cluster_file
from clusterstore.eventstore import EventStore
from tests.conftest import BACKENDS, fresh_database, pg_base_url, require_pg
from tests.contracts.support import LogSnapshot, snapshot
from tests.test_cli_cluster import blobs
from tests.test_cli_init import other_apps_table, shown
from tests.test_clustering_runs import FailAfter

N, D = 400, 6
UNSHARE = ["unshare", "-m", "--propagation", "private"]


FAISS_NORM = (
    "faiss computes squared distances in float32 (at most 3.4e+38), so every row's Euclidean "
    "norm must be below 4.61e+18 (a distance can reach 4x the largest squared norm); scale "
    "the embeddings down"
)


NOT_UTF8 = (
    "holds the byte 0xFF, which is not UTF-8; the store keeps names and paths as UTF-8 text: "
    "rename the file"
)
NOT_UTF8_MODEL = NOT_UTF8.replace("rename the file", "give it in UTF-8")


@dataclass(frozen=True)
class Case:
    args: str  # after ``--db URL``; {placeholders} name the files and runs below
    message: str  # after "Error: "; "..." at the end: a prefix
    exit_code: int = 1
    defaults: bool = True  # ``cluster`` gets --model m --k 3 --quiet before the args


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- the embeddings file
    "missing file": Case("cluster {dir}/nope.npy", "{dir}/nope.npy: no such file"),
    "a directory": Case(
        "cluster {dir}", "Invalid value for 'EMBEDDINGS': File '{dir}' is a directory.", 2
    ),
    "not .npy (csv)": Case(
        "cluster {dir}/x.csv", "x.csv: unsupported input format; give a .npy, .npz or .parquet file"
    ),
    "not .npy (text named .npy)": Case(
        "cluster {dir}/text.npy", "text.npy is not a readable .npy array (..."
    ),
    "truncated header": Case(
        "cluster {dir}/cut_header.npy", "cut_header.npy is not a readable .npy array (..."
    ),
    "truncated data": Case(
        "cluster {dir}/cut_data.npy",
        "cut_data.npy is truncated: {cut_data_size} bytes, but its header promises {emb_size}",
    ),
    "not a .npz archive": Case("cluster {dir}/bad.npz", "bad.npz is not a .npz archive (..."),
    "strings": Case(
        "cluster {dir}/str.npy",
        "str.npy holds str96 values; embeddings must be float16, float32 or float64",
    ),
    "objects": Case(
        "cluster {dir}/obj.npy",
        "obj.npy holds object values; embeddings must be float16, float32 or float64",
    ),
    "integers": Case(
        "cluster {dir}/int.npy",
        "int.npy holds int32 values; embeddings must be float16, float32 or float64",
    ),
    "1-D": Case(
        "cluster {dir}/flat.npy", "flat.npy has shape (4,); embeddings must be a 2-D array (N x d)"
    ),
    "3-D": Case(
        "cluster {dir}/cube.npy",
        "cube.npy has shape (2, 3, 4); embeddings must be a 2-D array (N x d)",
    ),
    "NaN row": Case(
        "cluster {dir}/nan.npy", "nan.npy row 123 contains NaN; embeddings must be finite"
    ),
    "infinity row": Case(
        "cluster {dir}/inf.npy", "inf.npy row 7 contains infinity; embeddings must be finite"
    ),
    "beyond float32": Case(
        "cluster {dir}/huge.npy",
        "huge.npy row 9 contains a value outside the float32 range; embeddings must be finite",
    ),
    "a finite row too long for faiss (1e19, float32)": Case(
        "cluster {dir}/long_row.npy", "long_row.npy row 11 has a norm of 2.45e+19; " + FAISS_NORM
    ),
    "a finite row too long for faiss (float64, spherical)": Case(
        "cluster {dir}/long_row64.npy --spherical",
        "long_row64.npy row 0 has a norm of 5e+18; " + FAISS_NORM,
    ),
    "assign: a finite row too long for faiss": Case(
        "assign {done} {dir}/long_row.npy -q",
        "long_row.npy row 11 has a norm of 2.45e+19; " + FAISS_NORM,
    ),
    "record: centroids too long for faiss": Case(
        "record {dir}/labels.npy --ids {dir}/ids.txt --model m --algorithm a "
        "--centroids {dir}/long_row.npy -q",
        "centroids row 11 has a norm of 2.45e+19; " + FAISS_NORM,
    ),
    "empty array": Case("cluster {dir}/empty.npy", "empty.npy holds no embeddings (0 rows)"),
    "no columns": Case(
        "cluster {dir}/nocols.npy",
        "nocols.npy has dimension 0; embeddings need at least one column",
    ),
    "npz with several arrays": Case(
        "cluster {dir}/two.npz", "two.npz holds several arrays (a, b); choose one with --npz-key"
    ),
    "npz without that key": Case(
        "cluster {dir}/two.npz --npz-key c", "two.npz has no array 'c' (it holds: a, b)"
    ),
    "npz key for a .npy": Case(
        "cluster {emb} --npz-key x", "emb.npy is a .npy file; --npz-key only applies to .npz files"
    ),
    # ---------------------------------------------------------------- the ids file
    "ids shorter": Case(
        "cluster {emb} --ids {dir}/short.txt",
        "short.txt holds 1 ids but the embeddings have 400 rows",
    ),
    "ids longer": Case(
        "cluster {emb} --ids {dir}/long.txt",
        "long.txt holds 401 ids but the embeddings have 400 rows",
    ),
    "ids not UUIDs": Case(
        "cluster {emb} --ids {dir}/notuuid.txt", "notuuid.txt line 5: 'not-a-uuid' is not a UUID"
    ),
    "ids as floats": Case(
        "cluster {emb} --ids {dir}/float_ids.npy",
        "float_ids.npy holds a 400 array of float64; ids must be 16-byte UUIDs (dtype V16 or "
        "N x 16 uint8) or UUID strings",
    ),
    "duplicate ids": Case(
        "cluster {emb} --ids {dir}/dup.txt",
        f"duplicate embedding id {uuid.UUID(int=1)} at rows 0 and 399 of dup.txt "
        "(lines 1 and 400); ids must be unique within a run",
    ),
    "ids file missing": Case("cluster {emb} --ids {dir}/nope.txt", "{dir}/nope.txt: no such file"),
    "embeddings from a pipe": Case(
        "cluster {dir}/fifo.npy",
        "{dir}/fifo.npy is not a regular file (a pipe, socket or device); save the data to a "
        "file and give its path",
    ),
    "ids from a pipe": Case(
        "cluster {emb} --ids {dir}/fifo.npy",
        "{dir}/fifo.npy is not a regular file (a pipe, socket or device); save the data to a "
        "file and give its path",
    ),
    "labels from a pipe": Case(
        "record {dir}/fifo.npy --model m --algorithm a",
        "{dir}/fifo.npy is not a regular file (a pipe, socket or device); save the data to a "
        "file and give its path",
    ),
    # ---------------------------------------------------------------- options
    "k = 0": Case(
        "cluster {emb} --k 0", "Invalid value for '--k': 0 is not in the range 1<=x<=2147483647.", 2
    ),
    "negative k": Case(
        "cluster {emb} --k -3",
        "Invalid value for '--k': -3 is not in the range 1<=x<=2147483647.",
        2,
    ),
    "k > n": Case(
        "cluster {emb} --k 401", "k must be between 1 and the number of embeddings (400), got 401"
    ),
    "k not a number": Case(
        "cluster {emb} --k many", "Invalid value for '--k': 'many' is not a valid integer...", 2
    ),
    "negative seed": Case(
        "cluster {emb} --seed -1", "Invalid value for '--seed': -1 is not in the range...", 2
    ),
    "batch size 0": Case(
        "cluster {emb} --batch-size 0",
        "Invalid value for '--batch-size': 0 is not in the range 1<=x<=2147483647.",
        2,
    ),
    "threads 0": Case(
        "cluster {emb} --threads 0",
        "Invalid value for '--threads': 0 is not in the range 1<=x<=2147483647.",
        2,
    ),
    "k overflows": Case(
        "cluster {emb} --k 99999999999999999999",
        "Invalid value for '--k': 99999999999999999999 is not in the range 1<=x<=2147483647.",
        2,
    ),
    "iterations overflow (no failed run written)": Case(
        "cluster {emb} --iterations 9223372036854775808",
        "Invalid value for '--iterations': 9223372036854775808 is not in the range "
        "1<=x<=2147483647.",
        2,
    ),
    "--after overflows": Case(
        "runs events {done} --after 99999999999999999999",
        "Invalid value for '--after': 99999999999999999999 is not in the range "
        "0<=x<=9223372036854775807.",
        2,
    ),
    "--limit overflows": Case(
        "runs events {done} --limit 99999999999999999999",
        "Invalid value for '--limit': 99999999999999999999 is not in the range "
        "0<=x<=9223372036854775807.",
        2,
    ),
    # ---------------------------------------------------------------- not UTF-8 (argv, file names)
    "model not UTF-8": Case(
        "cluster {emb} --model 'm\udcff'", "the model name (--model) 'm\\xff' " + NOT_UTF8_MODEL
    ),
    "input path not UTF-8": Case(
        "cluster {dir}/e\udcff.npy",
        "the input path '{dir}/e\\xff.npy' " + NOT_UTF8 + ", or give it through a link "
        "with a UTF-8 name",
    ),
    "ids path not UTF-8": Case(
        "cluster {emb} --ids {dir}/ids\udcff.txt",
        "params['ids_path'] '{dir}/ids\\xff.txt' " + NOT_UTF8 + ", or give it through a "
        "link with a UTF-8 name",
    ),
    "assign: input path not UTF-8": Case(
        "assign {done} {dir}/e\udcff.npy -q",
        "the input path '{dir}/e\\xff.npy' " + NOT_UTF8 + ", or give it through a link "
        "with a UTF-8 name",
    ),
    "record: algorithm not UTF-8": Case(
        "record {dir}/labels.npy --ids {dir}/ids.txt --model m --algorithm 'a\udcff' -q",
        "the algorithm name (--algorithm) 'a\\xff' holds the byte 0xFF, which is not UTF-8; "
        "the store keeps names and paths as UTF-8 text: give it in UTF-8",
    ),
    "bench --pg-url that cannot be parsed": Case(
        "bench --backend postgres --n 10 --pg-url 'postgresql://u:secret@[::1/x'",
        "cannot parse the database URL postgresql://u:***@... (check its port and "
        "percent-encode special characters of the password)",
    ),
    "bench --pg-url not a URL": Case(
        "bench --backend postgres --n 10 --pg-url nope",
        "the benchmark's PostgreSQL URL must be postgresql://USER@HOST/DATABASE (--pg-url or "
        "$CLUSTERSTORE_BENCH_PG_URL)",
    ),
    "blank model": Case("cluster {emb} --model ' '", "a run needs a model name (--model)"),
    "no model": Case("cluster {emb} --k 3", "Missing option '--model'.", 2, defaults=False),
    # ---------------------------------------------------------------- run ids
    "unknown run": Case(
        "runs show ffffffff", "no run matches 'ffffffff'; `clusterstore runs list` shows them"
    ),
    "not a run id": Case(
        "runs verify run-1", "'run-1' is not a run id (hex digits, dashes allowed)"
    ),
    "unknown run (events)": Case(
        "runs events 0000dead", "no run matches '0000dead'; `clusterstore runs list` shows them"
    ),
    "unknown run (export)": Case(
        "export ffff -o {dir}/out.csv", "no run matches 'ffff'; `clusterstore runs list` shows them"
    ),
    "unknown run (compare)": Case(
        "runs compare {done} abcdef12",
        "no run matches 'abcdef12'; `clusterstore runs list` shows them",
    ),
    "resume an unknown run": Case(
        "runs resume ffffffff", "no run matches 'ffffffff'; `clusterstore runs list` shows them"
    ),
    "resume a completed run": Case(
        "runs resume {done}", "run {done} is already completed; nothing to resume"
    ),
    "resume with a changed input": Case(
        "runs resume {broken}",
        "moved.npy is not the input of run {broken}: its digest {changed_digest} differs "
        "from the recorded {input_digest}; pass the original file",
    ),
    "resume with another shape": Case(
        "runs resume {broken} --embeddings {dir}/small.npy",
        "small.npy holds 100 x 6 embeddings but run {broken} was started on 400 x 6; "
        "pass its input",
    ),
    "resume with an ids file it was not started with": Case(
        "runs resume {broken} --ids {dir}/ids.txt",
        "run {broken} derived its ids from the input; --ids does not apply",
    ),
    # ---------------------------------------------------------------- init
    "init: one partition": Case(
        "init --partitions 1", "--partitions 1 is out of range: give 2 to 1024 partitions"
    ),
    "init: too many partitions": Case(
        "init --partitions 1025", "--partitions 1025 is out of range: give 2 to 1024 partitions"
    ),
    "init: negative partitions": Case(
        "init --partitions -3", "--partitions -3 is out of range: give 2 to 1024 partitions"
    ),
    "init: partitions not a number": Case(
        "init --partitions many",
        "Invalid value for '--partitions': 'many' is not a valid integer.",
        2,
    ),
}


def write_inputs(d: Path) -> dict[str, Any]:
    """The files the cases name, and the values their messages quote."""

    def save(name: str, arr: np.ndarray, **kw: Any) -> Path:
        np.save(d / name, arr, **kw)
        return d / name

    emb = save("emb.npy", blobs(N))
    full = emb.read_bytes()
    (d / "cut_data.npy").write_bytes(full[:-7])
    (d / "cut_header.npy").write_bytes(full[:40])
    (d / "text.npy").write_text("hello, this is not numpy\n")
    (d / "x.csv").write_text("1,2\n3,4\n")
    os.mkfifo(d / "fifo.npy")  # e.g. bash's <(...): never opened, so nothing blocks
    (d / "bad.npz").write_bytes(b"PK\x03\x04 but not really a zip")
    save("str.npy", np.array([["a", "bcd"], ["e", "f"]]))
    save("obj.npy", np.array([[1.0, None]], dtype=object), allow_pickle=True)
    save("int.npy", np.ones((4, 2), dtype=np.int32))
    save("flat.npy", np.ones(4, dtype=np.float32))
    save("cube.npy", np.zeros((2, 3, 4), dtype=np.float32))
    for name, row, value, dtype in (
        ("nan.npy", 123, np.nan, np.float32),
        ("inf.npy", 7, -np.inf, np.float32),
        ("huge.npy", 9, 1e300, np.float64),
    ):
        x = blobs(N).astype(dtype)
        x[row, 2] = value
        save(name, x)
    long_row = blobs(N)
    long_row[11] = 1e19  # finite in float32; faiss aborted the process on it
    save("long_row.npy", long_row)
    long_row64 = blobs(N).astype(np.float64)
    long_row64[0, 1] = 5e18
    save("long_row64.npy", long_row64)
    save("labels.npy", np.arange(N) % 3)
    shutil.copy(emb, f"{d}/e\udcff.npy")  # a file name that is not UTF-8 (b"e\xff.npy")
    save("empty.npy", np.zeros((0, D), dtype=np.float32))
    save("nocols.npy", np.zeros((5, 0), dtype=np.float32))
    save("small.npy", blobs(100))
    np.savez(d / "two.npz", a=blobs(10), b=blobs(10))
    ids = [uuid.uuid4() for _ in range(N + 1)]
    (d / "short.txt").write_text(f"{ids[0]}\n")
    (d / "long.txt").write_text("".join(f"{u}\n" for u in ids))
    (d / "ids.txt").write_text("".join(f"{u}\n" for u in ids[:N]))
    shutil.copy(d / "ids.txt", f"{d}/ids\udcff.txt")
    bad = [str(u) for u in ids[:N]]
    bad[4] = "not-a-uuid"
    (d / "notuuid.txt").write_text("".join(f"{u}\n" for u in bad))
    (d / "dup.txt").write_text("".join(f"{uuid.UUID(int=i % 399 + 1)}\n" for i in range(N)))
    save("float_ids.npy", np.zeros(N))
    return {
        "dir": str(d),
        "emb": str(emb),
        "emb_size": len(full),
        "cut_data_size": len(full) - 7,
    }


def sha12(path: Path) -> str:
    """The start of an input digest (a .npy file's is the sha256 of its bytes)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@dataclass
class Populated:
    db_url: str
    values: dict[str, Any]


@pytest.fixture(scope="module", params=BACKENDS)
def populated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Populated]:
    """A store holding a completed run and a failed one, and the input files (built once
    per backend: every case leaves the log as it was, which each case checks)."""
    d = tmp_path_factory.mktemp("bad_input")
    values = write_inputs(d)
    with fresh_database(request.param, d) as url:
        with EventStore.open(url) as store:
            settings = ClusterSettings(model="m", k=3, seed=5, batch_size=50)
            done = cluster_file(store, values["emb"], settings)
            moved = d / "moved.npy"
            shutil.copy(values["emb"], moved)
            with pytest.raises(RuntimeError, match="disk on fire"):
                cluster_file(store, moved, settings, reporter=FailAfter(100))
            broken = store.runs()[-1].run_id
        x = blobs(N)
        x[17, 3] += 1  # the failed run's input changes after it started
        np.save(moved, x)
        values.update(
            done=done.run_id,
            broken=broken,
            input_digest=sha12(Path(values["emb"])),
            changed_digest=sha12(moved),
        )
        yield Populated(url, values)


def invoke(db_url: str, args: list[str]) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *args], env={"CLUSTERSTORE_DB": None})


def cli_args(case: Case, values: dict[str, Any]) -> list[str]:
    args = shlex.split(case.args.format(**values))
    if args[0] == "cluster" and case.defaults:  # first: click keeps an option's last value
        args[1:1] = ["--model", "m", "--k", "3", "--quiet"]
    return args


def assert_one_error_line(result: Result, exit_code: int, message: str) -> None:
    """Exit code, nothing on stdout, exactly one ``Error:`` line (the last), no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception  # never a traceback
    assert (result.exit_code, result.stdout) == (exit_code, ""), result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:], result.stderr
    if exit_code == 1:
        assert len(lines) == 1, result.stderr  # nothing but the error
    else:
        assert lines[0].startswith("Usage: "), result.stderr
    got = errors[0].removeprefix("Error: ")
    if message.endswith("..."):
        assert got.startswith(message[:-3]), got
    else:
        assert got == message


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(populated: Populated, name: str) -> None:
    case = CASES[name]
    with EventStore.open(populated.db_url) as store:
        before = snapshot(store)
        result = invoke(populated.db_url, cli_args(case, populated.values))
        after = snapshot(store)
    assert_one_error_line(result, case.exit_code, case.message.format(**populated.values))
    assert after == before
    assert len(before.events) > N  # the log really holds runs


# ---------------------------------------------------------------- where the store lives


def assert_store_unchanged(db: str, before: LogSnapshot) -> None:
    with EventStore.open(db) as store:
        assert snapshot(store) == before


@pytest.fixture
def emb(tmp_path: Path) -> str:
    np.save(tmp_path / "emb.npy", blobs(N))
    return str(tmp_path / "emb.npy")


def cluster(db: str, emb: str) -> Result:
    return invoke(db, ["cluster", emb, "--model", "m", "--k", "3", "--quiet"])


def test_db_is_a_directory(tmp_path: Path, emb: str) -> None:
    (tmp_path / "sub").mkdir()
    listing = sorted(os.listdir(tmp_path))
    result = cluster(str(tmp_path / "sub"), emb)
    assert_one_error_line(
        result, 1, f"{tmp_path / 'sub'} is a directory; give the path of a database file"
    )
    assert sorted(os.listdir(tmp_path)) == listing and not os.listdir(tmp_path / "sub")


def test_db_is_a_loop_of_symlinks(tmp_path: Path, emb: str) -> None:
    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    for args in (["runs", "list"], ["cluster", emb, "--model", "m", "--k", "3"]):
        assert_one_error_line(
            invoke(str(tmp_path / "a.db"), args),
            1,
            f"{tmp_path / 'a.db'} is a loop of symbolic links; give the path of a database file",
        )


def test_db_is_a_file_of_another_kind(tmp_path: Path, emb: str) -> None:
    content = b"SQLite format 3"  # the header, but one byte short
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    result = cluster(str(path), emb)
    assert_one_error_line(result, 1, f"{path} is not a SQLite database; it was left untouched")
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "notes.db"]  # no -wal, no -journal


def test_db_of_another_application(db_url: str, emb: str) -> None:
    theirs = other_apps_table(db_url)
    before = Path(db_url).read_bytes() if "://" not in db_url else None
    result = cluster(db_url, emb)
    assert_one_error_line(
        result,
        1,
        f"{shown(db_url)} already holds tables that are not clusterstore's (embeddingcluster); "
        "use another database, or run `clusterstore init --allow-existing` to add the store "
        "beside them",
    )
    assert other_apps_table(db_url) == theirs
    if before is not None:
        assert Path(db_url).read_bytes() == before


def test_db_server_unreachable(emb: str) -> None:
    url = "postgresql://clusterstore:s3cret@127.0.0.1:1/nowhere"
    for args in (["cluster", emb, "--model", "m", "--k", "3"], ["runs", "list"]):
        result = invoke(url, args)
        assert_one_error_line(
            result,
            1,
            "cannot use the database at postgresql+psycopg://clusterstore:***@127.0.0.1:1/"
            "nowhere: connection failed: ...",
        )


def test_db_no_such_database(emb: str) -> None:
    """A server URL naming a database the server does not have: how to create it, for
    commands that write and commands that read, and nothing is created."""
    require_pg()
    base = pg_base_url()
    name = f"cs_missing_{uuid.uuid4().hex[:10]}"
    url = base.set(database=name, password="s3cret").render_as_string(hide_password=False)
    user = f" -U {base.username}" if base.username else ""
    port = f" -p {base.port}" if base.port else ""
    for args in (["cluster", emb, "--model", "m", "--k", "3"], ["runs", "list"], ["init"]):
        assert_one_error_line(
            invoke(url, args),
            1,
            f"no such database '{name}' on the PostgreSQL server at {base.host}:"
            f"{base.port or 5432} (postgresql+psycopg://{base.username}:***@{base.host}"
            f"{':' + str(base.port) if base.port else ''}/{name}); create it with "
            f"`createdb -h {base.host}{port}{user} {name}`, or give --db a URL that names an "
            "existing database",
        )
    engine = create_engine(base)
    with engine.connect() as c:
        assert (
            c.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :d"), {"d": name}
            ).scalar()
            == 0
        )
    engine.dispose()


def test_db_location_not_utf8(tmp_path: Path, emb: str) -> None:
    """A store at a path that is not UTF-8 can be created and read; a server URL that is
    not UTF-8 is one line, nothing of it shown past the user name."""
    path = f"{tmp_path}/st\udcffore.db"
    assert cluster(path, emb).exit_code == 0
    listed = invoke(path, ["runs", "list", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 1, listed.output
    for url in (
        "postgresql://clusterstore:s3cret@127.0.0.1:1/d\udcffb",
        "postgresql://clusterstore:s3\udcffcret@127.0.0.1:1/db",
    ):
        for args in (["cluster", emb, "--model", "m", "--k", "3"], ["runs", "list"]):
            assert_one_error_line(
                invoke(url, args),
                1,
                "the database URL postgresql://clusterstore:***@... holds the byte 0xFF, which "
                "is not UTF-8; a server's user, password, host and database names must be "
                "UTF-8 text",
            )


def make_store(path: Path, emb: str) -> LogSnapshot:
    """A SQLite store with one completed run at ``path`` (closed, so no -wal/-shm remain)."""
    assert cluster(str(path), emb).exit_code == 0
    with EventStore.open(path) as store:
        return snapshot(store)


def test_db_file_mode_0444(tmp_path: Path, emb: str) -> None:
    """chmod 0444 stops every user but root (CAP_DAC_OVERRIDE): as root the write goes
    through, which is what SQLite and the kernel do; the immutable file and the read-only
    mount below are the cases root cannot write."""
    path = tmp_path / "store.db"
    before = make_store(path, emb)
    path.chmod(0o444)
    result = cluster(str(path), emb)
    if os.geteuid() == 0:
        assert result.exit_code == 0
        return
    assert_one_error_line(
        result, 1, f"{path}: the database is read-only (attempt to write a readonly database)"
    )
    path.chmod(0o644)
    assert_store_unchanged(str(path), before)


def test_db_file_immutable(tmp_path: Path, emb: str) -> None:
    """``chattr +i``: not even root can write the file (SQLite opens it read-only)."""
    path = tmp_path / "store.db"
    before = make_store(path, emb)
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this file system (or user) cannot set the immutable attribute")
    try:
        result = cluster(str(path), emb)
        listed = invoke(str(path), ["runs", "list", "--json"])
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert_one_error_line(
        result, 1, f"{path}: the database is read-only (attempt to write a readonly database)"
    )
    assert listed.exit_code == 0  # reading still works
    assert_store_unchanged(str(path), before)


def test_db_on_a_read_only_mount(tmp_path: Path, emb: str, subprocess_env: dict[str, str]) -> None:
    """The store's directory bind-mounted read-only in a private mount namespace of the
    child (``unshare -m``; nothing is mounted for anyone else). A write cannot create the
    -wal/-shm files there: one line naming the file. The commands that only read open the
    store read-only (``immutable=1``: no -shm needed), so an archived store can be listed,
    shown, verified and exported."""
    store_dir = tmp_path / "ro"
    store_dir.mkdir()
    path = store_dir / "store.db"
    before = make_store(path, emb)
    run_id = str(before.runs[0][0])  # cs_runs: (run_id, ...)
    files = sorted(os.listdir(store_dir))
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode
    ):
        pytest.skip("no private mount namespaces here (needs CAP_SYS_ADMIN)")

    def run_child(args: list[str]) -> subprocess.CompletedProcess[str]:
        script = (
            f'mount --bind "{store_dir}" "{store_dir}" && '
            f'mount -o remount,bind,ro "{store_dir}" || exit 77; exec "$@"'
        )
        cmd = [sys.executable, "-m", "clusterstore", "--db", str(path), *args]
        child = subprocess.run(
            [*UNSHARE, "sh", "-c", script, "sh", *cmd],
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=120,
        )
        if child.returncode == 77:
            pytest.skip(f"cannot bind-mount read-only here: {child.stderr.strip()}")
        return child

    child = run_child(["cluster", emb, "--model", "m", "--k", "3"])
    assert (child.returncode, child.stdout) == (1, ""), child.stderr
    assert child.stderr == (
        f"Error: {path}: unable to open the database file; SQLite must be able to write "
        "the file and its directory (for the -wal and -shm files)\n"
    )
    out = tmp_path / "out.csv"
    for args in (
        ["runs", "list"],
        ["runs", "show", run_id],
        ["runs", "verify", "--all"],
        ["export", run_id, "-o", str(out), "-q"],
        ["projections", "lookup-index"],
    ):
        child = run_child(args)
        assert (child.returncode, child.stderr) == (0, ""), (args, child.stderr)
    assert run_id[:8] in run_child(["runs", "list"]).stdout
    assert out.stat().st_size > 0
    assert sorted(os.listdir(store_dir)) == files
    assert_store_unchanged(str(path), before)


@pytest.mark.parametrize("command", ["cluster", "assign", "import-legacy"])
def test_a_missing_input_creates_no_store(tmp_path: Path, command: str) -> None:
    """A writing command refused for its input leaves no database behind where none was."""
    db = tmp_path / "new.db"
    missing = str(tmp_path / "missing.npy")
    args = {
        "cluster": ["cluster", missing, "--model", "m", "--k", "3"],
        "assign": ["assign", "0123", missing],
        "import-legacy": ["import-legacy", str(tmp_path / "missing.db")],
    }[command]
    result = invoke(str(db), [*args, "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []

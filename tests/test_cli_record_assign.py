"""``clusterstore record`` and ``clusterstore assign``: the formats, the output (text,
``--quiet``, ``--json`` in the store's vocabulary), and ``init`` making the views."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect

import clusterstore
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from tests.api_util import blobs, hex_id, uuids, view_rows

RUN_KEYS = [
    "run_id",
    "parent_run_id",
    "model",
    "algorithm",
    "k",
    "n_embeddings",
    "n_assignments",
    "n_noise",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "assignment_digest",
    "input_digest",
    "cluster_sizes",
]


def run(db: str, *args: Any) -> Result:
    result = CliRunner().invoke(cli, ["--db", db, *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def labels_of(db: str, run_id: str) -> tuple[list[uuid.UUID], list[int], list[float]]:
    with clusterstore.open(db) as store:
        ids, clusters, distances = store.labels(run_id)
    return [uuid.UUID(bytes=i.tobytes()) for i in ids], clusters.tolist(), distances.tolist()


def test_record_npy_with_every_option(db_url: str, tmp_path: Path) -> None:
    ids = uuids(6)
    np.save(tmp_path / "labels.npy", np.array([1, 0, 2, 2, 0, 1], dtype=np.int32))
    np.save(tmp_path / "ids.npy", np.array([str(u) for u in ids]))
    np.save(tmp_path / "dist.npy", np.arange(6, dtype=np.float64) / 2)
    np.save(tmp_path / "centroids.npy", np.eye(3, 4, dtype=np.float32))
    result = run(
        db_url,
        "record", tmp_path / "labels.npy", "--ids", tmp_path / "ids.npy",
        "--model", "mini", "--algorithm", "kmeans-sklearn",
        "--distances", tmp_path / "dist.npy", "--centroids", tmp_path / "centroids.npy",
        "--params", '{"n_init": 10}', "--json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert list(out) == RUN_KEYS
    assert (out["model"], out["algorithm"], out["k"], out["n_assignments"]) == (
        "mini",
        "kmeans-sklearn",
        3,
        6,
    )
    assert (out["status"], out["cluster_sizes"], out["n_noise"], out["parent_run_id"]) == (
        "completed",
        [2, 2, 2],
        0,
        None,
    )
    assert out["started_at"].endswith("Z") and out["finished_at"].endswith("Z")
    assert labels_of(db_url, out["run_id"]) == (ids, [1, 0, 2, 2, 0, 1], [0, 0.5, 1, 1.5, 2, 2.5])
    with clusterstore.open(db_url) as store:
        assert store.run(out["run_id"]).params == {"n_init": 10}
        child = store.assign(out["run_id"], np.eye(4, dtype=np.float32))
        assert store.labels(child)[1].tolist() == [0, 1, 2, 0]  # the recorded centroids


def test_record_reads_back_an_export_and_a_text_ids_file(db_url: str, tmp_path: Path) -> None:
    ids = uuids(5)
    (tmp_path / "ids.txt").write_text("".join(f"{u}\n" for u in ids))
    np.save(tmp_path / "l.npy", np.array([0, 1, 0, 1, 1]))
    first = run(
        db_url, "record", tmp_path / "l.npy", "--ids", tmp_path / "ids.txt",
        "--model", "m", "--algorithm", "x", "--quiet",
    ).stdout.strip()  # fmt: skip
    assert uuid.UUID(first)
    run(db_url, "export", first, "-o", tmp_path / "a.csv", "--quiet")
    again = run(
        db_url, "record", tmp_path / "a.csv", "--id-column", "embedding_id",
        "--model", "m", "--algorithm", "x",
    ).stdout  # fmt: skip
    second = again.split()[1]
    assert again == (
        f"run {second} completed\n"
        "  m: x, k=2\n"
        "  5 assignments, 0 noise; cluster sizes: min 2, max 3\n"
        f"  assignment digest {_digest(db_url, second)}\n"
    )
    assert labels_of(db_url, second)[:2] == labels_of(db_url, first)[:2]


def _digest(db: str, run_id: str) -> str:
    with clusterstore.open(db) as store:
        digest = store.run(run_id).assignment_digest
    assert digest is not None
    return digest


def test_record_parquet_and_csv_columns(db_url: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ids = uuids(4)
    table = pa.table(
        {
            "doc": pa.array([u.bytes for u in ids], pa.binary(16)),
            "topic": pa.array([3, 1, 0, 3], pa.int64()),
            "score": pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text(
        "doc,topic,score\n"
        + "".join(f"{u},{t},1.5\n" for u, t in zip(ids, [3, 0, 0, 3], strict=True))
    )
    for name in ("t.parquet", "t.csv"):
        out = json.loads(
            run(
                db_url, "record", tmp_path / name, "--id-column", "doc", "--label-column", "topic",
                "--distance-column", "score", "--model", "m", "--algorithm", "bertopic", "--json",
            ).stdout
        )  # fmt: skip
        assert out["k"] == 4 and out["n_assignments"] == 4
        got_ids, _, distances = labels_of(db_url, out["run_id"])
        assert got_ids == ids and len(distances) == 4


def test_assign_command(db_url: str, tmp_path: Path, backend: str) -> None:
    np.save(tmp_path / "x.npy", blobs(200))
    np.save(tmp_path / "new.npy", blobs(30, seed=4))
    parent = json.loads(
        run(db_url, "cluster", tmp_path / "x.npy", "--model", "m", "--k", "3", "--seed", "1",
            "--json").stdout
    )["run_id"]  # fmt: skip
    out = json.loads(run(db_url, "assign", parent[:13], tmp_path / "new.npy", "--json").stdout)
    assert list(out) == RUN_KEYS
    assert (out["parent_run_id"], out["n_assignments"], out["k"]) == (parent, 30, 3)
    assert out["input_digest"] and out["assignment_digest"]
    quiet = run(db_url, "assign", parent, tmp_path / "new.npy", "--quiet").stdout.strip()
    text = run(db_url, "assign", parent, tmp_path / "new.npy").stdout
    assert text.startswith("run ") and f"  m: kmeans-l2, k=3, assigned to run {parent}\n" in text
    with clusterstore.open(db_url) as store:
        assert store.run(quiet).assignment_digest == out["assignment_digest"]
        rows = view_rows(
            store,
            "SELECT count(*) FROM embeddingcluster WHERE run_id = :r",
            r=hex_id(uuid.UUID(quiet), backend),
        )
        assert rows == [(30,)]  # the command left the read models current


def test_a_new_store_and_init_have_the_views(db_url: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other.db")
    for db in (db_url, other):
        EventStore.open(db).close()  # a store made without the views (the log layer alone)
    run(db_url, "init")  # init makes them for an existing store
    run(other, "runs", "list")  # any command on a store it did not create leaves it as it is
    run(str(tmp_path / "new.db"), "init")  # a store created by a command has them
    with clusterstore.open(db_url) as store:
        assert view_rows(store, "SELECT count(*) FROM embeddingcluster") == [(0,)]
    with clusterstore.open(str(tmp_path / "new.db")) as store:
        assert view_rows(store, "SELECT count(*) FROM clustersize") == [(0,)]
    with EventStore.open(other) as store, store.recorder.transaction() as conn:
        assert "embeddingcluster" not in inspect(conn).get_view_names()

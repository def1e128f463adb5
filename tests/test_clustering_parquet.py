"""Parquet input: embeddings and ids from columns, streamed by row group, and the same run
as the same numbers given as .npy."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from tests.test_cli_cluster import blobs, log_snapshot

N, D = 1500, 6


def run(db_url: str, *args: Any) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, "cluster", *map(str, args)])


def write_parquet(
    path: Path,
    x: np.ndarray,
    ids: list[uuid.UUID],
    *,
    fixed: bool,
    binary_ids: bool,
    row_group_size: int = 400,
) -> None:
    values = pa.array(x.reshape(-1))
    emb = (
        pa.FixedSizeListArray.from_arrays(values, x.shape[1])
        if fixed
        else pa.ListArray.from_arrays(
            pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32)), values
        )
    )
    id_col = (
        pa.array([u.bytes for u in ids], type=pa.binary(16))
        if binary_ids
        else pa.array([str(u) for u in ids])
    )
    table = pa.table(
        {"doc_id": id_col, "text_len": pa.array(np.arange(len(ids))), "embedding": emb}
    )
    pq.write_table(table, path, row_group_size=row_group_size)


@pytest.fixture
def data(tmp_path: Path) -> tuple[np.ndarray, list[uuid.UUID]]:
    rng = np.random.default_rng(5)
    return blobs(N, D).astype(np.float32), [uuid.UUID(bytes=rng.bytes(16)) for _ in range(N)]


@pytest.mark.parametrize(("fixed", "binary_ids"), [(True, False), (False, True)])
def test_parquet_equals_the_same_data_as_npy(
    db_url: str,
    tmp_path: Path,
    data: tuple[np.ndarray, list[uuid.UUID]],
    fixed: bool,
    binary_ids: bool,
) -> None:
    x, ids = data
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "ids.txt").write_text("".join(f"{u}\n" for u in ids))
    write_parquet(tmp_path / "emb.parquet", x, ids, fixed=fixed, binary_ids=binary_ids)
    common = ["--model", "m", "--k", 5, "--seed", 3, "--batch-size", 500, "--json"]
    a = run(db_url, tmp_path / "emb.npy", "--ids", tmp_path / "ids.txt", *common)
    b = run(
        db_url,
        tmp_path / "emb.parquet",
        "--embeddings-column",
        "embedding",
        "--id-column",
        "doc_id",
        *common,
    )
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    ra, rb = json.loads(a.output), json.loads(b.output)
    assert (
        ra["assignment_digest"] == rb["assignment_digest"]
        and ra["cluster_sizes"] == rb["cluster_sizes"]
    )
    with EventStore.open(db_url) as store:
        started = [next(store.read(uuid.UUID(r["run_id"]), limit=1)).event for r in (ra, rb)]
        assert started[0].input_digest == started[1].input_digest  # type: ignore[attr-defined]
        assert started[0].ids_digest == started[1].ids_digest  # type: ignore[attr-defined]


def test_the_only_list_column_is_found_and_ids_are_derived_without_id_column(
    db_url: str, tmp_path: Path, data: tuple[np.ndarray, list[uuid.UUID]]
) -> None:
    x, ids = data
    write_parquet(tmp_path / "e.parquet", x, ids, fixed=True, binary_ids=False)
    result = run(db_url, tmp_path / "e.parquet", "--model", "m", "--k", 4, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_assignments"] == N


def test_a_killed_parquet_run_resumes_from_its_columns(
    store: EventStore, db_url: str, tmp_path: Path, data: tuple[np.ndarray, list[uuid.UUID]]
) -> None:
    from clusterstore.clustering import ClusterSettings, cluster_file, resume
    from clusterstore.eventstore.runs import RunWriter

    x, ids = data
    path = tmp_path / "e.parquet"
    write_parquet(path, x, ids, fixed=False, binary_ids=False)
    settings = ClusterSettings(model="m", k=5, seed=1, batch_size=300, chunk_rows=1024)
    clean = cluster_file(store, path, settings, embeddings_column="embedding", id_column="doc_id")
    real_complete = RunWriter.complete
    try:
        RunWriter.complete = lambda self: (_ for _ in ()).throw(RuntimeError("crash"))  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            cluster_file(store, path, settings, embeddings_column="embedding", id_column="doc_id")
    finally:
        RunWriter.complete = real_complete  # type: ignore[method-assign]
    failed = store.runs()[-1].run_id
    resumed = resume(store, failed)
    assert resumed.digest == clean.digest and resumed.status == "completed"


def bad_cases(tmp: Path, x: np.ndarray, ids: list[uuid.UUID]) -> list[tuple[list[Any], str]]:
    write_parquet(tmp / "ok.parquet", x, ids, fixed=False, binary_ids=False)
    ragged = pa.table({"embedding": pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp / "ragged.parquet")
    nulls = pa.table({"embedding": pa.array([[1.0, 2.0], None], type=pa.list_(pa.float32()))})
    pq.write_table(nulls, tmp / "nulls.parquet")
    ints = pa.table({"embedding": pa.array([[1, 2], [3, 4]], type=pa.list_(pa.int64()))})
    pq.write_table(ints, tmp / "ints.parquet")
    (tmp / "junk.parquet").write_bytes(b"not parquet at all")
    return [
        (
            [tmp / "ok.parquet", "--embeddings-column", "nope"],
            "ok.parquet has no column 'nope' (columns: doc_id, text_len, embedding)",
        ),
        (
            [tmp / "ok.parquet", "--embeddings-column", "text_len"],
            "ok.parquet:text_len is int64, not a list of floats (one embedding per row)",
        ),
        (
            [tmp / "ok.parquet", "--id-column", "text_len"],
            "ok.parquet:text_len is int64; ids must be UUID strings or 16-byte binaries",
        ),
        (
            [tmp / "ragged.parquet"],
            "ragged.parquet:embedding: row 1 has 1 values, the first row has 2",
        ),
        ([tmp / "nulls.parquet"], "nulls.parquet:embedding: row 1 is null"),
        (
            [tmp / "ints.parquet"],
            "ints.parquet:embedding holds int64 values; embeddings must "
            "be float16, float32 or float64",
        ),
    ]


def test_bad_parquet_input_is_one_line_and_writes_nothing(
    store: EventStore, db_url: str, tmp_path: Path, data: tuple[np.ndarray, list[uuid.UUID]]
) -> None:
    x, ids = data
    before = log_snapshot(store)
    for args, message in bad_cases(tmp_path, x, ids):
        result = run(db_url, *args, "--model", "m", "--k", 2)
        assert result.exit_code == 1, (args, result.output)
        *warnings, last = result.output.splitlines()  # tiny inputs also warn about k
        assert last == f"Error: {message}", args
        assert all(w.startswith("Warning: ") for w in warnings)
    junk = run(db_url, tmp_path / "junk.parquet", "--model", "m", "--k", 2)
    assert junk.exit_code == 1 and junk.output.startswith(
        "Error: junk.parquet is not a readable parquet file"
    )
    assert len(junk.output.splitlines()) == 1
    assert log_snapshot(store) == before


def test_parquet_input_without_pyarrow_names_the_extra(
    store: EventStore,
    db_url: str,
    tmp_path: Path,
    data: tuple[np.ndarray, list[uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An install without the parquet extra: one line naming it (it was a traceback for
    parquet embeddings; record's labels and export already said so), nothing written."""
    x, ids = data
    path = tmp_path / "emb.parquet"
    write_parquet(path, x, ids, fixed=True, binary_ids=False)
    np.save(tmp_path / "emb.npy", x)
    parent = run(db_url, tmp_path / "emb.npy", "--model", "m", "--k", 2, "--seed", 1, "-q")
    assert parent.exit_code == 0, parent.output
    before = log_snapshot(store)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    needs = "Error: reading .parquet files needs pyarrow: pip install 'clusterstore[parquet]'\n"
    for args in (
        ["cluster", path, "--model", "m", "--k", 2],
        ["assign", parent.stdout.strip(), path],
    ):
        result = CliRunner().invoke(cli, ["--db", db_url, *map(str, args)])
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", needs), args
    assert log_snapshot(store) == before

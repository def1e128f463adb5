"""``clusterstore cluster``, ``runs resume`` and ``demo`` through click, on both backends:
exit codes, exact messages, and a log left unchanged by every refused input."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from clustering import DEMO_BATCH_SIZE, DEMO_MODELS
from eventstore import EventStore, RunCompleted


def blobs(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 5 * rng.standard_normal((3, d))
    return (centres[rng.integers(0, 3, n)] + rng.standard_normal((n, d))).astype(np.float32)


def run(db_url: str, *args: Any) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *map(str, args)])


def log_snapshot(store: EventStore) -> list[tuple[Any, ...]]:
    return [(e.run_id, e.seq, e.type, e.payload, e.position) for e in store.feed()]


@pytest.fixture
def emb(tmp_path: Path) -> Path:
    path = tmp_path / "emb.npy"
    np.save(path, blobs(400))
    return path


def test_cluster_prints_the_run_and_json_has_the_summary(
    store: EventStore, db_url: str, emb: Path
) -> None:
    result = run(db_url, "cluster", emb, "--model", "mini", "--k", 3, "--seed", 4, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {k: out[k] for k in ("status", "n_assignments", "model", "k")} == {
        "status": "completed",
        "n_assignments": 400,
        "model": "mini",
        "k": 3,
    }
    assert uuid.UUID(out["run_id"]) == store.runs()[-1].run_id
    assert out["empty_clusters"] == [] and sum(out["cluster_sizes"]) == 400
    text = run(db_url, "cluster", emb, "--model", "mini", "--k", 3, "--seed", 4)
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(" completed")
    assert lines[-1] == f"  digest {out['digest']}"
    quiet = run(db_url, "cluster", emb, "--model", "mini", "--k", 3, "--seed", 4, "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == f"{store.runs()[-1].run_id}\n"


def test_cluster_with_ids_text_file_and_npz_key(
    store: EventStore, db_url: str, tmp_path: Path
) -> None:
    ids = [uuid.uuid4() for _ in range(400)]
    (tmp_path / "ids.txt").write_text("".join(f"{u}\n" for u in ids))
    np.savez(tmp_path / "emb.npz", a=blobs(400), b=blobs(3))
    result = run(
        db_url,
        "cluster",
        tmp_path / "emb.npz",
        "--npz-key",
        "a",
        "--ids",
        tmp_path / "ids.txt",
        "--model",
        "m",
        "--k",
        2,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    run_id = store.runs()[-1].run_id
    events = [e.event for e in store.read(run_id)]
    assert [e.embedding_id for e in events[2:-1]] == ids
    assert events[0].params["npz_key"] == "a"
    assert events[0].params["ids_path"] == str((tmp_path / "ids.txt").resolve())


def test_too_few_points_per_cluster_is_a_warning_on_stderr(db_url: str, emb: Path) -> None:
    result = run(db_url, "cluster", emb, "--model", "m", "--k", 20, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == (
        "Warning: 400 embeddings for k=20 is fewer than 39 per cluster (780); the centroids "
        "will be poorly estimated, consider a smaller k\n"
    )


def input_error_cases(tmp: Path, emb: Path) -> list[tuple[list[Any], str]]:
    def save(name: str, arr: np.ndarray) -> Path:
        np.save(tmp / name, arr)
        return tmp / name

    nan = blobs(400)
    nan[123, 4] = np.nan
    (tmp / "dup.txt").write_text("".join(f"{uuid.UUID(int=i % 399 + 1)}\n" for i in range(400)))
    (tmp / "short.txt").write_text(f"{uuid.uuid4()}\n")
    npz = tmp / "two.npz"
    np.savez(npz, a=blobs(10), b=blobs(10))
    return [
        ([tmp / "nope.npy"], f"{tmp / 'nope.npy'}: no such file"),
        ([save("nan.npy", nan)], "nan.npy row 123 contains NaN; embeddings must be finite"),
        (
            [save("int.npy", np.ones((4, 2), dtype=np.int32))],
            "int.npy holds int32 values; embeddings must be float16, float32 or float64",
        ),
        (
            [save("flat.npy", np.ones(4, dtype=np.float32))],
            "flat.npy has shape (4,); embeddings must be a 2-D array (N x d)",
        ),
        ([emb, "--k", 401], "k must be between 1 and the number of embeddings (400), got 401"),
        (
            [emb, "--ids", tmp / "dup.txt"],
            f"duplicate embedding id {uuid.UUID(int=1)} at rows 0 and 399 of dup.txt "
            "(lines 1 and 400); ids must be unique within a run",
        ),
        (
            [emb, "--ids", tmp / "short.txt"],
            "short.txt holds 1 ids but the embeddings have 400 rows",
        ),
        ([emb, "--npz-key", "x"], "emb.npy is a .npy file; --npz-key only applies to .npz files"),
        ([emb, "--model", " "], "a run needs a model name (--model)"),
        ([npz], "two.npz holds several arrays (a, b); choose one with --npz-key"),
        ([npz, "--npz-key", "c"], "two.npz has no array 'c' (it holds: a, b)"),
    ]


def test_every_input_error_is_one_line_exit_1_and_writes_nothing(
    store: EventStore, db_url: str, emb: Path, tmp_path: Path
) -> None:
    assert run(db_url, "cluster", emb, "--model", "m", "--k", 3, "--quiet").exit_code == 0
    before = log_snapshot(store)
    for args, message in input_error_cases(tmp_path, emb):
        # defaults first: click keeps the last value of a repeated option
        result = run(db_url, "cluster", "--model", "m", "--k", 3, *args)
        assert (result.exit_code, result.output) == (1, f"Error: {message}\n"), args
    assert log_snapshot(store) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--k", 0], "Invalid value for '--k': 0 is not in the range x>=1."),
        (["--k", 3, "--seed", -1], "Invalid value for '--seed': -1 is not in the range"),
        (["--k", 3, "--batch-size", 0], "Invalid value for '--batch-size'"),
        (["--k", 3, "--threads", 0], "Invalid value for '--threads'"),
    ],
)
def test_usage_errors_exit_2(db_url: str, emb: Path, args: list[Any], fragment: str) -> None:
    result = run(db_url, "cluster", emb, "--model", "m", *args)
    assert result.exit_code == 2 and fragment in result.output


def test_missing_model_is_a_usage_error(db_url: str, emb: Path) -> None:
    result = run(db_url, "cluster", emb, "--k", 3)
    assert result.exit_code == 2 and "Missing option '--model'" in result.output


def test_runs_resume_errors(store: EventStore, db_url: str, emb: Path) -> None:
    done = run(db_url, "cluster", emb, "--model", "m", "--k", 3, "--quiet").stdout.strip()
    before = log_snapshot(store)
    result = run(db_url, "runs", "resume", done)
    assert (result.exit_code, result.output) == (
        1,
        f"Error: run {done} is already completed; nothing to resume\n",
    )
    result = run(db_url, "runs", "resume", "ffffffff")
    assert (result.exit_code, result.output) == (
        1,
        "Error: no run matches 'ffffffff'; `clusterstore runs list` shows them\n",
    )
    assert log_snapshot(store) == before


def test_demo_makes_three_completed_runs_and_prints_the_table(
    store: EventStore, db_url: str
) -> None:
    result = run(db_url, "demo", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "run id",
        "model",
        "algorithm",
        "k",
        "n",
        "status",
        "started",
        "duration",
    ]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]
    assert [(r[1], int(r[3]), int(r[4]), r[5]) for r in rows] == [
        (m.name, m.k, m.n, "completed") for m in reversed(DEMO_MODELS)
    ]
    heads = store.runs()
    for head, row in zip(reversed(heads), rows, strict=True):
        assert store.resolve_run(row[0]) == head.run_id
        last = next(iter(store.read(head.run_id, after=head.head - 1))).event
        assert isinstance(last, RunCompleted) and last.count == head.head - 3
    assert {m.n % DEMO_BATCH_SIZE for m in DEMO_MODELS} >= {0, 1}

"""``clusterstore cluster``, ``runs resume`` and ``demo`` through click, on both backends:
exit codes and exact messages. Refused inputs (files, ids, options, run ids, database
locations) are the battery in test_bad_input.py."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterstore.cli.main import cli
from clusterstore.clustering import DEMO_BATCH_SIZE, DEMO_MODELS
from clusterstore.eventstore import EventStore, RunCompleted


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
    assert lines[-2:] == [
        f"  input digest       {out['input_digest']}",
        f"  assignment digest  {out['assignment_digest']}",
    ]
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


def test_a_refused_small_input_is_the_error_alone(db_url: str, tmp_path: Path) -> None:
    """The few-points warning is said once the input is accepted, never before a refusal
    (a refusal is one line)."""
    x = blobs(40, d=2)
    x[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    result = run(db_url, "cluster", tmp_path / "nan.npy", "--model", "m", "--k", 2)
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "Error: nan.npy row 7 contains NaN; embeddings must be finite\n",
    )


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

"""The load and fault harness (``tests/harness``), on both backends.

Several ``clusterstore cluster`` processes write one store at once (a SQLite file in WAL
mode, or a PostgreSQL schema) while ``projections catch-up --follow`` applies the log and a
reader runs the read commands in a loop; chosen writers are SIGKILLed at seeded points and
resumed afterwards, the follower is SIGKILLed and restarted. Then (``harness.checks``):
no process printed a lock error or a traceback; every read answered; ``runs verify --all``
passes (read models included); the feed is dense with every (run, seq) once; each run holds
exactly what its writer reported; each killed run resumed to the digest of an uninterrupted
run of the same input, or (killed before its centroids) is reported incomplete; the read
models equal a full rebuild.

CI runs the short form; ``pytest -m stress`` the long one (sizes below). Each writes its
summary to ``harness-<backend>.json`` in the test's directory and prints it (``-s -n 0``:
a worker of pytest-xdist keeps its output).
``HARNESS_SEED=N`` picks other kill points.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from tests.harness.checks import check_all
from tests.harness.driver import Harness, Spec

SHORT = Spec(writers=3, n=3_000, dim=16, k=8, batch_size=250, kills=1, follower_kills=1, seed=7)
LONG = Spec(
    writers=6,
    n=200_000,
    rounds=3,
    dim=32,
    k=50,
    batch_size=5_000,
    kills=2,
    follower_kills=2,
    seed=11,
)


def run_harness(db_url: str, tmp_path: Path, env: dict[str, str], spec: Spec) -> None:
    if os.environ.get("HARNESS_SEED"):  # explore other kill points by hand
        spec = dataclasses.replace(spec, seed=int(os.environ["HARNESS_SEED"]))
    h = Harness(db_url, tmp_path, spec, env)
    try:
        report = h.run()
        check_all(h)
    finally:
        h.close()
    summary = report.summary()
    (tmp_path / f"harness-{report.backend}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    assert report.kills_landed + report.kills_missed == spec.kills * spec.rounds
    assert report.kills_landed >= 1  # a kill that never lands would prove nothing
    assert report.follower_restarts == spec.follower_kills * spec.rounds


def test_harness_short(db_url: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    run_harness(db_url, tmp_path, subprocess_env, SHORT)


@pytest.mark.stress
def test_harness_long(db_url: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    run_harness(db_url, tmp_path, subprocess_env, LONG)

"""The audit commands through click's CliRunner: exact output and exit codes, both backends."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterstore import projections
from clusterstore.audit import verify_run
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from tests.audit_data import (
    RUN_A,
    RUN_B,
    RUN_C,
    clock,  # noqa: F401  (fixture)
    drop_triggers,
    flip_byte,
    labels_for,
    make_run,
    stored_payload,
)
from tests.test_audit_compare import reference_ari, reference_nmi

A, B, C = str(RUN_A), str(RUN_B), str(RUN_C)


@pytest.fixture
def history(store: EventStore, clock: None) -> Iterator[EventStore]:  # noqa: F811
    """A completed, a failed and an incomplete run (times from the fixed clock)."""
    make_run(store, RUN_A)
    make_run(store, RUN_B, end="fail", rows=20, seed=1)
    make_run(store, RUN_C, end="none", rows=10, model="minilm", seed=2)
    yield store


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *args])


# ---------------------------------------------------------------- runs list

LIST = """\
run id         model   algorithm  k   n  status      started              duration
-------------  ------  ---------  -  --  ----------  -------------------  --------
0190aaaa-0003  minilm  kmeans-l2  4  50  incomplete  2026-01-02 03:04:11  -
0190aaaa-0002  mpnet   kmeans-l2  4  50  failed      2026-01-02 03:04:08  1.5s
0190aaaa-0001  mpnet   kmeans-l2  4  50  completed   2026-01-02 03:04:05  1.5s
"""


def test_list(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "list")
    assert (result.exit_code, result.stdout, result.stderr) == (0, LIST, "")


def test_list_filters(history: EventStore, db_url: str) -> None:
    lines = LIST.splitlines(keepends=True)
    failed = run(db_url, "runs", "list", "--status", "failed")
    assert failed.stdout == (
        "run id         model  algorithm  k   n  status  started              duration\n"
        "-------------  -----  ---------  -  --  ------  -------------------  --------\n"
        "0190aaaa-0002  mpnet  kmeans-l2  4  50  failed  2026-01-02 03:04:08  1.5s\n"
    )
    for status, line in (("incomplete", 2), ("running", 2), ("completed", 4)):
        out = run(db_url, "runs", "list", "--status", status).stdout.splitlines()
        assert [x.split()[0] for x in out[2:]] == [lines[line].split()[0]]
    mpnet = run(db_url, "runs", "list", "--model", "mpnet").stdout.splitlines()
    assert [x.split()[0] for x in mpnet[2:]] == ["0190aaaa-0002", "0190aaaa-0001"]
    none = run(db_url, "runs", "list", "--model", "nope")
    assert (none.exit_code, none.stdout) == (0, "No runs match.\n")
    bad = run(db_url, "runs", "list", "--status", "done")
    assert bad.exit_code == 2 and "'done' is not one of" in bad.stderr


def test_list_json(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["run_id"] for r in rows] == [C, B, A]
    assert [r["status"] for r in rows] == ["running", "failed", "completed"]
    assert rows[1] == {
        "run_id": B,
        "model": "mpnet",
        "algorithm": "kmeans-l2",
        "k": 4,
        "n_embeddings": 50,
        "n_assignments": 20,
        "n_noise": None,  # known from RunCompleted; this run failed
        "status": "failed",
        "started_at": "2026-01-02T03:04:08.000000Z",
        "finished_at": "2026-01-02T03:04:09.500000Z",
        "duration_s": 1.5,
        "n_events": 23,
        "error": "out of memory",
        "problem": None,
        "damage": None,  # the read models skip no part of it
    }
    assert (rows[0]["n_assignments"], rows[0]["finished_at"]) == (10, None)
    assert rows[2]["n_noise"] == 0  # completed without noise


def test_list_empty_store(store: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "list")
    assert (result.exit_code, result.stdout) == (0, f"No runs in {store.display_url}.\n")
    assert run(db_url, "runs", "list", "--json").stdout == "[]\n"


# ---------------------------------------------------------------- runs show

# the digest (version 2: one segment, sha256(32 zero bytes || sha256(payloads))) of run A's
# assignment payloads (tests/audit_data.py builds them deterministically); version 1's, the
# plain sha256, was cc55cb6d7aef3c66b4c1ba1d2a139f6fbce5ab1f4a19fe254f170807e268b371
DIGEST_A = "a0705684e9966b3894b0a8eca643a9b087d9cb34e55b3ca913e55bd5d66d86e6"

SHOW_A = f"""\
run        {A}
status     completed
model      mpnet
algorithm  kmeans-l2 (k 4, dim 2, seed 0)
params     {{"niter": 20}}
input      50 embeddings, input digest {"ab" * 32}
events     53, 50 assignments
centroids  4 x 2, objective 12.5, 20 iterations, trained in 0.25s
started    2026-01-02 03:04:05 UTC
finished   2026-01-02 03:04:06 UTC (1.5s)
result     assignment digest {DIGEST_A}
integrity  {{integrity}}

cluster sizes: 4 clusters, min 9, median 12, max 17
   9-10  ########################  2
  11-12                            0
  13-14  ############              1
  15-16                            0
     17  ############              1
"""


CHECKED_A = (
    "ok (seqs 1-53 whole; assignment digest, count and cluster sizes match; no read model holds it)"
)
NOT_CHECKED = (
    "not checked (counts, digest and sizes as RunCompleted recorded them; "
    "`runs show --verify` or `runs verify` checks the log and the read model)"
)


def test_show(history: EventStore, db_url: str) -> None:
    """A completed run is shown from what it recorded, and says it was not checked; with
    --verify it is checked like ``runs verify`` and says so (the same counts and sizes)."""
    result = run(db_url, "runs", "show", "0190aaaa-0001")
    expected = SHOW_A.replace("{integrity}", NOT_CHECKED)
    assert (result.exit_code, result.stdout, result.stderr) == (0, expected, "")
    checked = run(db_url, "runs", "show", "0190aaaa-0001", "--verify")
    expected = SHOW_A.replace("{integrity}", CHECKED_A)
    assert (checked.exit_code, checked.stdout, checked.stderr) == (0, expected, "")


def test_show_failed_and_incomplete(history: EventStore, db_url: str) -> None:
    failed = run(db_url, "runs", "show", B).stdout.splitlines()
    assert failed[1] == "status     failed"
    assert failed[9:12] == [
        "finished   2026-01-02 03:04:09 UTC (1.5s)",
        "error      ValueError: out of memory",
        "integrity  ok (seqs 1-23 whole; no RunCompleted to check an assignment digest "
        "against; no read model holds it)",
    ]
    incomplete = run(db_url, "runs", "show", "0190aaaa0003").stdout.splitlines()
    assert incomplete[1] == (
        "status     incomplete (10 of 50 assigned; no RunCompleted or RunFailed: still being "
        "written, or its writer stopped)"
    )


def test_show_json(history: EventStore, db_url: str) -> None:
    unchecked = json.loads(run(db_url, "runs", "show", A, "--json").stdout)
    assert unchecked["integrity"] is None  # nothing claims a check that was not made
    result = run(db_url, "runs", "show", A, "--json", "--verify")
    data = json.loads(result.stdout)
    assert {k: v for k, v in data.items() if k != "integrity"} == {
        k: v for k, v in unchecked.items() if k != "integrity"
    }
    assert data["status"] == "completed" and data["params"] == {"niter": 20}
    assert data["cluster_sizes"] == np.bincount(labels_for(50, 4, 0), minlength=4).tolist()
    assert data["centroids"] == {
        "k": 4,
        "dim": 2,
        "objective": 12.5,
        "iterations": 20,
        "train_s": 0.25,
    }
    assert data["assignment_digest"] == data["integrity"]["assignment_digest"] == DIGEST_A
    assert data["input_digest"] == "ab" * 32
    assert data["integrity"]["computed_assignment_digest"] == DIGEST_A
    assert data["median_cluster_size"] == 12  # as the text's histogram says
    assert data["integrity"]["ok"] is True and data["integrity"]["findings"] == []


def test_show_reports_findings(history: EventStore, db_url: str) -> None:
    drop_triggers(history)
    flip_byte(history, RUN_A, 10, 20, 0x01)  # cluster 2**24 + c: beyond k
    unchecked = run(db_url, "runs", "show", A).stdout.splitlines()
    assert unchecked[11] == f"integrity  {NOT_CHECKED}"  # never "ok" without the check
    lines = run(db_url, "runs", "show", A, "--verify").stdout.splitlines()
    assert lines[10] == f"result     assignment digest {DIGEST_A}"  # as RunCompleted says
    assert lines[11] == "integrity  3 findings (no read model holds it):"
    assert lines[12].startswith(f"  {A} seq 10: cluster 1677721")


@pytest.mark.parametrize("command", ["show", "events", "verify", "export"])
def test_unknown_and_ambiguous_runs(history: EventStore, db_url: str, command: str) -> None:
    group = [] if command == "export" else ["runs"]
    extra = ["--output", "x.csv"] if command == "export" else []
    unknown = run(db_url, *group, command, "ffff", *extra)
    assert (unknown.exit_code, unknown.stdout, unknown.stderr) == (
        1,
        "",
        "Error: no run matches 'ffff'; `clusterstore runs list` shows them\n",
    )
    ambiguous = run(db_url, *group, command, "0190aaaa", *extra)
    assert (ambiguous.exit_code, ambiguous.stderr) == (
        1,
        f"Error: run prefix '0190aaaa' is ambiguous: it matches {A}, {B}, {C}; "
        "give more characters\n",
    )
    not_an_id = run(db_url, *group, command, "run-1", *extra)
    assert not_an_id.stderr == "Error: 'run-1' is not a run id (hex digits, dashes allowed)\n"


def test_show_on_an_empty_store(store: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "show", "0190")
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: no run matches '0190'; `clusterstore runs list` shows them\n",
    )


# ---------------------------------------------------------------- runs events


def test_events(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "events", "0190aaaa-0001", "--limit", "3")
    assert result.exit_code == 0
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(x["seq"], x["type"]) for x in lines] == [
        (1, "RunStarted"),
        (2, "CentroidsComputed"),
        (3, "AssignmentRecorded"),
    ]
    assert lines[0]["data"]["started_at"] == "2026-01-02T03:04:05.000000Z"
    assert lines[2] == {
        "run_id": A,
        "seq": 3,
        "type": "AssignmentRecorded",
        "version": 1,
        "data": {
            "embedding_id": "5f82c2d9-cfeb-0fa3-21d7-d982f8bd1045",
            "cluster": 3,
            "distance": 0.5213857,
        },
    }
    typed = run(db_url, "runs", "events", A, "--type", "runcompleted", "--type", "RunStarted")
    assert [json.loads(x)["seq"] for x in typed.stdout.splitlines()] == [1, 53]
    after = run(db_url, "runs", "events", A, "--after", "51")
    assert [json.loads(x)["seq"] for x in after.stdout.splitlines()] == [52, 53]
    bad = run(db_url, "runs", "events", A, "--type", "Nope")
    assert bad.exit_code == 2 and "'Nope' is not one of" in bad.stderr


def test_events_with_an_undecodable_row(history: EventStore, db_url: str) -> None:
    drop_triggers(history)
    flip_byte(history, RUN_A, 10, 0, 0x94)
    result = run(db_url, "runs", "events", A)
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 53
    bad = json.loads(result.stdout.splitlines()[9])
    assert (bad["seq"], bad["payload_hex"]) == (10, stored_payload(history, RUN_A, 10).hex())
    assert result.stderr == (
        f"Error: run {A}: 1 event(s) could not be decoded (the first at seq 10); "
        'they are printed with an "error" field\n'
    )


# ---------------------------------------------------------------- runs verify


def test_verify_all_ok(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "verify", "--all")
    assert (result.exit_code, result.stdout) == (
        0,
        f"{A}: ok (53 events, 50 assignments, assignment digest matches)\n"
        f"{B}: ok (23 events, 20 assignments, not completed)\n"
        f"{C}: ok (12 events, 10 assignments, not completed)\n",
    )


def test_verify_and_show_check_the_projected_read_model(history: EventStore, db_url: str) -> None:
    """The CLI hands the projections' check to the audit: a projected run is compared with
    its rows in ``embeddingcluster``, and a change made there around the store is found."""
    projections.catch_up_all(history)
    data = json.loads(run(db_url, "runs", "verify", A, "--json").stdout)
    assert (data["ok"], data["runs"][0]["read_model"]) == (True, "ok")
    show = run(db_url, "runs", "show", A, "--verify").stdout.splitlines()
    assert show[11] == (
        "integrity  ok (seqs 1-53 whole; assignment digest, count and cluster sizes match; "
        "the read model agrees)"
    )
    with history.recorder.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM pj_ec_assignment_g1 WHERE seq = 30")
    result = run(db_url, "runs", "verify", A, "--json")
    assert result.exit_code == 1
    found = json.loads(result.stdout)["runs"][0]
    assert found["read_model"] == "mismatch"
    assert [(f["kind"], f["seq"]) for f in found["findings"]] == [
        ("changed_assignment", 30),
        ("read_model_mismatch", None),
    ]


def test_verify_finds_a_corrupted_row(history: EventStore, db_url: str) -> None:
    drop_triggers(history)
    flip_byte(history, RUN_A, 10, 0, 0x94)
    report = verify_run(history, RUN_A)
    bad = stored_payload(history, RUN_A, 10)
    cluster = int(labels_for(50, 4, 0)[10 - 3])  # seq 10 holds row 7
    size = int(np.bincount(labels_for(50, 4, 0))[cluster])
    result = run(db_url, "runs", "verify", "0190aaaa-0002", "0190aaaa-0001")
    assert result.exit_code == 1
    missing = history.missing_triggers()  # drop_triggers: a finding of its own
    assert missing
    assert result.stdout == (
        f"{history.display_url}: the log's append-only triggers {', '.join(missing)} are "
        "missing (dropped around the store); `clusterstore init` restores them\n"
        f"{B}: ok (23 events, 20 assignments, not completed)\n"
        f"{A} seq 10: AssignmentRecorded payload is not in the canonical 29-byte layout "
        f"(29 bytes, version 1: {bad.hex()})\n"
        f"{A} seq 53: the assignments (seqs 3-52) hash to {report.digest[:16]}, "
        f"RunCompleted recorded {report.recorded_digest[:16]}\n"  # type: ignore[index]
        f"{A} seq 53: RunCompleted's cluster sizes differ "
        f"(cluster {cluster}: {size} recorded, {size - 1} in the log)\n"
    )
    as_json = run(db_url, "runs", "verify", A, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert [(f["kind"], f["seq"]) for f in data["runs"][0]["findings"]] == [
        ("not_canonical", 10),
        ("digest_mismatch", 53),
        ("sizes_mismatch", 53),
    ]


def test_verify_usage(history: EventStore, db_url: str) -> None:
    for args in ([], [A, "--all"]):
        result = run(db_url, "runs", "verify", *args)
        assert result.exit_code == 2
        assert "Error: give one or more RUN ids, or --all (not both)" in result.stderr


def test_verify_empty_store(store: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "verify", "--all")
    assert (result.exit_code, result.stdout) == (0, f"No runs to verify in {store.display_url}.\n")
    as_json = run(db_url, "runs", "verify", "--all", "--json")
    assert json.loads(as_json.stdout) == {"ok": True, "missing_triggers": [], "runs": []}


# ---------------------------------------------------------------- runs compare


def test_compare(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "compare", "0190aaaa-0001", "0190aaaa-0002", "--top", "3")
    assert result.exit_code == 0
    assert (
        result.stdout
        == f"""\
A  {A}  mpnet, kmeans-l2 k 4, 50 assignments, completed
B  {B}  mpnet, kmeans-l2 k 4, 20 assignments, failed

shared ids  20  (only in A: 30, only in B: 0)
ARI         0.0835
NMI         0.3298
clusters    4 in A, 4 in B (over the shared ids)

largest overlaps
cluster A  cluster B  shared  of A   of B
---------  ---------  ------  -----  ------
        3          1       4  80.0%  66.7%
        2          2       3  33.3%  100.0%
        2          3       3  33.3%  50.0%

matched clusters (one to one, Hungarian assignment): 4 pairs; 10 of 20 shared ids changed \
their matched cluster
cluster A  cluster B  shared  jaccard
---------  ---------  ------  -------
        3          1       4  0.571
        2          2       3  0.333
        0          0       2  0.286
... and 1 more pairs (a larger --top shows them; --json lists all)
"""
    )
    # The figures, from the textbook formulas over the 20 shared rows:
    a, b = labels_for(50, 4, 0)[:20].tolist(), labels_for(50, 4, 1)[:20].tolist()
    assert f"{reference_ari(a, b):.4f}" == "0.0835"
    assert f"{reference_nmi(a, b):.4f}" == "0.3298"
    assert Counter(zip(a, b, strict=True)).most_common(1) == [((3, 1), 4)]
    # the best one-to-one pairing keeps 10 of the 20 shared ids (0-0, 1-3, 2-2, 3-1)
    cells = Counter(zip(a, b, strict=True))
    best = max(sum(cells[(i, p[i])] for i in range(4)) for p in itertools.permutations(range(4)))
    assert best == 10


def test_compare_with_itself_json(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "compare", A, A, "--json", "--top", "1")
    data = json.loads(result.stdout)
    assert (data["ari"], data["nmi"], data["n_shared"], data["n_only_a"]) == (1.0, 1.0, 50, 0)
    assert data["overlaps"] == [
        {"cluster_a": 2, "cluster_b": 2, "n_shared": 17, "share_of_a": 1.0, "share_of_b": 1.0}
    ]


def test_compare_unknown_run(history: EventStore, db_url: str) -> None:
    result = run(db_url, "runs", "compare", A, "abcdef")
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: no run matches 'abcdef'; `clusterstore runs list` shows them\n",
    )


# ---------------------------------------------------------------- export


def test_export(history: EventStore, db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "a.csv"
    result = run(db_url, "export", "0190aaaa-0001", "--output", str(out))
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        f"exported 50 assignments of run {A} to {out} (csv)\n",
        "",
    )
    assert out.read_text().splitlines()[:2] == [
        "embedding_id,cluster,distance",
        "5f82c2d9-cfeb-0fa3-21d7-d982f8bd1045,3,0.5213857",
    ]
    npy = run(db_url, "export", A, "-o", str(tmp_path / "a.npy"))
    assert npy.stdout.endswith("(npy)\n")
    refused = run(db_url, "export", C, "-o", str(tmp_path / "c.bin"), "--format", "npy")
    assert (refused.exit_code, refused.stdout, refused.stderr) == (
        1,
        "",
        f"Error: run {C} is not completed (status: incomplete); 10 assignments are recorded; "
        "pass --allow-incomplete to export them anyway\n",
    )
    assert not (tmp_path / "c.bin").exists()
    partial = run(
        db_url, "export", C, "-o", str(tmp_path / "c.bin"), "--format", "npy", "--allow-incomplete"
    )
    assert partial.stdout == f"exported 10 assignments of run {C} to {tmp_path / 'c.bin'} (npy)\n"
    assert partial.stderr == (
        f"warning: run {C} is not completed (status: incomplete); the export holds the 10 "
        "assignments recorded so far\n"
    )


def test_export_parquet_missing(
    history: EventStore, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = run(db_url, "export", A, "-o", str(tmp_path / "a.parquet"))
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: parquet export needs pyarrow, which is not installed: pip install "
        "'clusterstore[parquet]' (or use --format csv or npy)\n",
    )
    bad = run(db_url, "export", A, "-o", "x", "--format", "xlsx")
    assert bad.exit_code == 2


def error(result: Result) -> tuple[int, str, str]:
    return (result.exit_code, result.stdout, result.stderr)


@pytest.mark.sqlite_only
def test_export_onto_the_store_is_refused(history: EventStore, db_url: str) -> None:
    """Issue 16: `export RUN -o <the store>` replaced the database and exited 0."""
    db = Path(db_url)
    for target in (db, db.with_name(db.name + "-wal")):
        assert target.is_file()
        result = run(db_url, "export", A, "-o", str(target), "--format", "csv", "--force")
        assert error(result) == (
            1,
            "",
            f"Error: {target} is one of the store's own files; it is never overwritten, "
            "even with --force; give another file name\n",
        )
    assert run(db_url, "runs", "list").stdout == LIST
    assert sorted(p.name for p in db.parent.iterdir()) == [
        "store.db",
        "store.db-shm",
        "store.db-wal",
    ]


def test_export_onto_an_existing_file(history: EventStore, db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "a.csv"
    out.write_text("mine\n")
    refused = run(db_url, "export", A, "-o", str(out))
    assert error(refused) == (
        1,
        "",
        f"Error: {out} already exists; pass --force to replace it, or give another name\n",
    )
    assert out.read_text() == "mine\n"
    forced = run(db_url, "export", A, "-o", str(out), "--force")
    assert forced.exit_code == 0 and out.read_text().startswith("embedding_id,cluster,distance\n")


def test_export_to_stdout(
    history: EventStore, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-o -` streams the data to stdout (the summary goes to stderr) and creates no file."""
    monkeypatch.chdir(tmp_path)
    run(db_url, "export", A, "-o", "a.csv", "-q")
    result = run(db_url, "export", A, "-o", "-", "--format", "csv")
    assert error(result) == (
        0,
        (tmp_path / "a.csv").read_text(),
        f"exported 50 assignments of run {A} to - (csv)\n",
    )
    for args, message in (
        ([], "writing to standard output (-o -) needs --format csv or parquet"),
        (
            ["--format", "npy"],
            "npy cannot be streamed to standard output (its header holds the row count); "
            "give a file name, or use --format csv or parquet",
        ),
    ):
        assert error(run(db_url, "export", A, "-o", "-", *args)) == (1, "", f"Error: {message}\n")
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-o", "x.json"],
            "cannot tell the format of x.json from its extension; name it .csv, .npy or "
            ".parquet, or give --format csv, npy or parquet",
        ),
        (
            ["-o", "a.csv", "--format", "parquet"],
            "a.csv has the extension .csv but --format is parquet; name the file .parquet or "
            "drop --format",
        ),
        (
            ["-o", "/dev/null", "--format", "csv"],
            "/dev/null is a character device, not a "
            "regular file; give a file name (or - for standard output)",
        ),
    ],
)
def test_export_refused_targets(
    history: EventStore,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    listing = sorted(os.listdir(tmp_path))
    assert error(run(db_url, "export", A, *args)) == (1, "", f"Error: {message}\n")
    assert sorted(os.listdir(tmp_path)) == listing
    assert os.path.exists("/dev/null") and Path("/dev/null").is_char_device()


def test_export_incomplete_warns_even_when_quiet(
    history: EventStore, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "b.csv"
    refused = run(db_url, "export", B, "-o", str(out), "-q")
    assert error(refused) == (
        1,
        "",
        f"Error: run {B} is not completed (status: failed); 20 assignments are recorded; "
        "pass --allow-incomplete to export them anyway\n",
    )
    allowed = run(db_url, "export", B, "-o", str(out), "-q", "--allow-incomplete")
    assert error(allowed) == (
        0,
        "",
        f"warning: run {B} is not completed (status: failed); the export holds the 20 "
        "assignments recorded so far\n",
    )
    assert len(out.read_text().splitlines()) == 21

"""``import-legacy``: moving in from a real SQLModel database, read-only and idempotent."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SAWarning
from sqlmodel import Session, SQLModel

from clusterstore.cli.main import cli
from clusterstore.eventstore import (
    AssignmentRecorded,
    EventStore,
    RunCompleted,
    RunFailed,
    RunStarted,
)
from clusterstore.eventstore.codec import AssignmentDigest
from clusterstore.legacy import LegacySource, import_legacy
from clusterstore.legacy.importer import EMPTY_RESULT_ERROR
from tests.conftest import drop_pg_schema, make_pg_schema_url
from tests.legacy_models import ClusteringResult, EmbeddingCluster, uuid7


@dataclass
class Legacy:
    url: str
    good: uuid.UUID  # 250 rows, 3 clusters
    empty: uuid.UUID  # result row committed, rows rolled back
    twice: uuid.UUID  # first batch committed, re-sent batch failed: 100 of 300 rows
    rows: dict[uuid.UUID, list[EmbeddingCluster]]


def build_legacy(url: str) -> Legacy:
    engine = create_engine(url)
    SQLModel.metadata.create_all(
        engine,
        tables=[
            ClusteringResult.__table__,  # type: ignore[attr-defined]
            EmbeddingCluster.__table__,
        ],
    )  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    rows: dict[uuid.UUID, list[EmbeddingCluster]] = {}

    def result(model: str, n: int) -> ClusteringResult:
        r = ClusteringResult(
            model_name=model, algorithm="kmeans", n_clusters=3, n_embeddings=n, notes=f"{model} run"
        )
        with Session(engine, expire_on_commit=False) as s:
            s.add(r)
            s.commit()
            s.refresh(r)
        return r

    def assignments(r: ClusteringResult, n: int) -> list[EmbeddingCluster]:
        clusters = [uuid7() for _ in range(3)]
        return [
            EmbeddingCluster(
                embedding_id=uuid.UUID(bytes=rng.bytes(16)),
                clustering_result_id=r.id,
                cluster_id=clusters[int(rng.integers(0, 3))],
            )
            for _ in range(n)
        ]

    good = result("all-mpnet-base-v2", 250)
    rows[good.id] = assignments(good, 250)
    with Session(engine, expire_on_commit=False) as s:
        s.add_all(rows[good.id])
        s.commit()

    empty = result("stsb-roberta", 100)
    # The legacy failure: a batch re-sent into the same transaction. SQLAlchemy warns about
    # the conflicting identity first; that is the bug being reproduced, not ours.
    with Session(engine, expire_on_commit=False) as s, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        batch = assignments(empty, 100)
        s.add_all(batch)
        s.flush()
        s.add(
            EmbeddingCluster(
                id=batch[0].id,
                embedding_id=uuid7(),
                clustering_result_id=empty.id,
                cluster_id=uuid7(),
            )
        )
        with pytest.raises(IntegrityError):
            s.flush()
        s.rollback()
    rows[empty.id] = []

    twice = result("nomic-embed-text", 300)
    batch = assignments(twice, 300)
    with Session(engine, expire_on_commit=False) as s:
        s.add_all(batch[:100])
        s.commit()
    # the re-sent list: the first 100 again, then the rest
    with Session(engine, expire_on_commit=False) as s, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        s.add_all([EmbeddingCluster(**b.model_dump()) for b in batch])
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
    rows[twice.id] = batch[:100]
    engine.dispose()
    return Legacy(url, good.id, empty.id, twice.id, rows)


@pytest.fixture
def legacy(tmp_path: Path) -> Legacy:
    return build_legacy(f"sqlite:///{tmp_path / 'legacy.db'}")


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def check_imported(store: EventStore, legacy: Legacy) -> None:
    for run_id, expected in legacy.rows.items():
        events = [e for _, e in store.read(run_id)]
        started = events[0]
        assert isinstance(started, RunStarted)
        assert started.legacy_id == run_id and started.imported_from
        assert started.n_embeddings == len(expected)
        assigned = [e for e in events if isinstance(e, AssignmentRecorded)]
        ordered = sorted(expected, key=lambda r: r.id.bytes)
        assert [a.legacy_id for a in assigned] == [r.id for r in ordered]
        assert [a.embedding_id for a in assigned] == [r.embedding_id for r in ordered]
        clusters = started.legacy_cluster_ids or []
        assert [clusters[a.cluster] for a in assigned] == [r.cluster_id for r in ordered]
        assert all(np.isnan(a.distance) for a in assigned)
        last = events[-1]
        if run_id == legacy.good:
            assert isinstance(last, RunCompleted) and last.count == 250
            digest = AssignmentDigest.for_run(started)
            for raw in store.read_raw(run_id):
                if raw.type == AssignmentRecorded.TYPE:
                    digest.update(raw.payload, 1)
            assert last.digest == digest.hexdigest()
            assert sum(last.cluster_sizes) == 250
            assert started.model == "all-mpnet-base-v2" and started.algorithm == "kmeans"
            assert started.params["legacy_columns"] == {
                "n_clusters": 3,
                "notes": "all-mpnet-base-v2 run",
            }
        else:
            assert isinstance(last, RunFailed)
        if run_id == legacy.empty:
            assert isinstance(last, RunFailed) and last.error == EMPTY_RESULT_ERROR
        if run_id == legacy.twice:
            assert isinstance(last, RunFailed)
            assert "declares 300 embeddings but has 100" in last.error


def test_import_keeps_legacy_ids_and_marks_debris_failed(store: EventStore, legacy: Legacy) -> None:
    before = file_digest(sqlite_path(legacy.url))
    with LegacySource(sqlite_path(legacy.url)) as source:
        report = import_legacy(source, store)
    assert (report.imported, report.skipped, report.failed_runs, report.assignments) == (
        3,
        0,
        2,
        350,
    )
    check_imported(store, legacy)
    assert file_digest(sqlite_path(legacy.url)) == before  # the source is never written


def test_reimport_imports_nothing_and_changes_nothing(store: EventStore, legacy: Legacy) -> None:
    with LegacySource(sqlite_path(legacy.url)) as source:
        import_legacy(source, store)
        position = store.max_position()
        again = import_legacy(source, store)
    assert (again.imported, again.resumed, again.skipped) == (0, 0, 3)
    assert store.max_position() == position


def interrupt_import(store: EventStore, legacy: Legacy, monkeypatch: pytest.MonkeyPatch) -> int:
    """Import with the 4th append failing (the good result: RunStarted and 128 of its 250
    rows stored); returns the good run's head."""
    real_append = store.append
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise ConnectionError("the server went away")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(store, "append", flaky)
    with LegacySource(sqlite_path(legacy.url)) as source, pytest.raises(ConnectionError):
        import_legacy(source, store, chunk=64)
    monkeypatch.setattr(store, "append", real_append)
    head = store.head(legacy.good)
    assert 1 < head < 252
    return head


def test_an_interrupted_import_is_finished_by_running_it_again(
    store: EventStore, legacy: Legacy, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_import(store, legacy, monkeypatch)
    with LegacySource(sqlite_path(legacy.url)) as source:
        report = import_legacy(source, store, chunk=64)
    assert report.resumed == 1 and report.imported == 2
    check_imported(store, legacy)


def test_an_import_begun_by_an_older_release_is_finished_with_its_digest_version(
    store: EventStore, legacy: Legacy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clusterstore.audit import verify_run
    from clusterstore.legacy import importer

    real_started = importer.run_started
    monkeypatch.setattr(  # an older release: its RunStarted declares no digest version
        importer,
        "run_started",
        lambda *a: msgspec.structs.replace(real_started(*a), digest_version=1),
    )
    interrupt_import(store, legacy, monkeypatch)
    monkeypatch.setattr(importer, "run_started", real_started)
    with LegacySource(sqlite_path(legacy.url)) as source:
        report = import_legacy(source, store, chunk=64)
    assert report.resumed == 1
    versions = {}
    for head in store.runs():
        started = next(iter(store.read(head.run_id, until=1))).event
        assert isinstance(started, RunStarted)
        versions[head.run_id] = started.digest_version
        assert verify_run(store, head.run_id).ok
    assert sorted(versions.values()) == [1, 2, 2]  # the interrupted one kept version 1
    check_imported(store, legacy)


def test_dry_run_writes_nothing(store: EventStore, legacy: Legacy) -> None:
    with LegacySource(sqlite_path(legacy.url)) as source:
        report = import_legacy(source, store, dry_run=True)
    assert report.imported == 3 and store.max_position() == 0 and store.runs() == []


def test_cli_import_then_reimport(db_url: str, legacy: Legacy) -> None:
    runner = CliRunner()
    src = sqlite_path(legacy.url)
    first = runner.invoke(cli, ["--db", db_url, "import-legacy", src, "--json"])
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    assert (doc["n_imported"], doc["n_failed_runs"], doc["n_assignments"]) == (3, 2, 350)
    assert {r["run_id"] for r in doc["runs"]} == {str(u) for u in legacy.rows}
    again = runner.invoke(cli, ["--db", db_url, "import-legacy", src])
    assert again.exit_code == 0
    assert again.output == (
        f"Nothing new to import: all 3 legacy results from {src} are already in the store.\n"
    )


def test_cli_errors(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["--db", db_url, "import-legacy", str(tmp_path / "nope.db")])
    assert (missing.exit_code, missing.output) == (
        1,
        f"Error: legacy database {tmp_path / 'nope.db'} does not exist\n",
    )
    other = tmp_path / "other.db"
    create_engine(f"sqlite:///{other}").connect().exec_driver_sql("CREATE TABLE t (x)").close()
    wrong = runner.invoke(cli, ["--db", db_url, "import-legacy", str(other)])
    assert wrong.exit_code == 1
    assert wrong.output == (
        f"Error: {other} has no table 'clusteringresult'; a legacy database has the tables "
        "'clusteringresult' and 'embeddingcluster'\n"
    )


def test_import_from_a_postgresql_legacy_database(tmp_path: Path) -> None:
    url, schema = make_pg_schema_url()
    try:
        legacy = build_legacy(url)
        with EventStore.open(tmp_path / "store.db") as store, LegacySource(url) as source:
            report = import_legacy(source, store)
            assert report.imported == 3
            check_imported(store, legacy)
            with (
                pytest.raises(DBAPIError, match="read-only transaction"),
                source.engine.begin() as c,
            ):
                c.execute(text("DELETE FROM embeddingcluster"))
    finally:
        drop_pg_schema(schema)


def test_imported_runs_pass_the_audit_commands(db_url: str, legacy: Legacy, tmp_path: Path) -> None:
    """verify, events, export and compare take the imported 47-byte assignments (legacy row
    ids, no distances) as what they are, not as tampering."""
    runner = CliRunner()
    src = sqlite_path(legacy.url)
    assert runner.invoke(cli, ["--db", db_url, "import-legacy", src, "--quiet"]).exit_code == 0
    verify = runner.invoke(cli, ["--db", db_url, "runs", "verify", "--all"])
    assert verify.exit_code == 0, verify.output
    assert (
        f"{legacy.good}: ok (252 events, 250 assignments, assignment digest matches)"
        in verify.output
    )
    events = runner.invoke(
        cli, ["--db", db_url, "runs", "events", str(legacy.good), "--after", "1", "--limit", "1"]
    )
    first = min(legacy.rows[legacy.good], key=lambda r: r.id.bytes)
    data = json.loads(events.output)["data"]
    assert (data["embedding_id"], data["distance"], data["legacy_id"]) == (
        str(first.embedding_id),
        None,
        str(first.id),
    )
    out = tmp_path / "good.csv"
    export = runner.invoke(cli, ["--db", db_url, "export", str(legacy.good), "--output", str(out)])
    assert export.exit_code == 0, export.output
    lines = out.read_text().splitlines()
    assert len(lines) == 251 and lines[1].startswith(f"{first.embedding_id},")
    compare = runner.invoke(
        cli, ["--db", db_url, "runs", "compare", str(legacy.good), str(legacy.good), "--json"]
    )
    assert compare.exit_code == 0 and json.loads(compare.output)["ari"] == 1.0


# ---------------------------------------------------------------- malformed rows, changed sources

GOOD_ROWS = [
    (
        "01a22b4640ff7759bef1afbe9a7e6401",
        "f8c2becf931aed15f5d3ef2d059d9f3c",
        "01a22b4640ff7759bef1afbb2932bae1",
    ),
    (
        "01a22b4640ff7759bef1afbe9a7e6402",
        "f8c2becf931aed15f5d3ef2d059d9f3d",
        "01a22b4640ff7759bef1afbb2932bae1",
    ),
]
R1, R2 = "01a22b4640d5749e9cc3b2338add4889", "01a22b4640d5749e9cc3b2338add4890"
ROW2 = f"row 2 of result {uuid.UUID(R1)} in id order (id '{GOOD_ROWS[1][0]}')"
NOTHING_OF_R1 = f"nothing of legacy result {uuid.UUID(R1)} was written"
AGAIN = "correct (or delete) the row and run the import again"

MALFORMED = {
    "NULL embedding_id": (
        "UPDATE embeddingcluster SET embedding_id = NULL WHERE rowid = 2",
        f"legacy table embeddingcluster, {ROW2}: column embedding_id is NULL; {NOTHING_OF_R1}",
    ),
    "non-UUID embedding_id": (
        "UPDATE embeddingcluster SET embedding_id = 'zz' WHERE rowid = 2",
        f"legacy table embeddingcluster, {ROW2}: column embedding_id is not a UUID ('zz'); "
        f"{NOTHING_OF_R1}",
    ),
    "NULL cluster_id": (
        "UPDATE embeddingcluster SET cluster_id = NULL WHERE rowid = 2",
        f"legacy table embeddingcluster, {ROW2}: column cluster_id is NULL; {NOTHING_OF_R1}",
    ),
    "uneven hex ids (they add up to 32 each)": (
        "UPDATE embeddingcluster SET embedding_id = substr(embedding_id, 1, 31) WHERE rowid = 1; "
        "UPDATE embeddingcluster SET embedding_id = embedding_id || 'a' WHERE rowid = 2",
        "legacy table embeddingcluster, row 1 of result "
        f"{uuid.UUID(R1)} in id order (id '{GOOD_ROWS[0][0]}'): column embedding_id is not a "
        f"UUID ('{GOOD_ROWS[0][1][:31]}'); {NOTHING_OF_R1}",
    ),
    "non-UUID row id": (
        "UPDATE embeddingcluster SET id = 'nope' WHERE rowid = 2",
        f"legacy table embeddingcluster, row 2 of result {uuid.UUID(R1)} in id order "
        f"(id 'nope'): column id is not a UUID ('nope'); {NOTHING_OF_R1}",
    ),
    "unparsable date": (
        "UPDATE clusteringresult SET created_at = 'garbage' WHERE rowid = 1",
        f"legacy table clusteringresult, row 1 in id order (id '{R1}'): column created_at is "
        "not a date ('garbage'); nothing was imported",
    ),
    "NULL result id": (
        "UPDATE clusteringresult SET id = NULL WHERE rowid = 2",
        "legacy table clusteringresult, row 1 in id order (id NULL): column id is NULL; "
        "nothing was imported",
    ),
    "non-UUID result id": (
        "UPDATE clusteringresult SET id = 'bad' WHERE rowid = 2",
        "legacy table clusteringresult, row 2 in id order (id 'bad'): column id is not a UUID "
        "('bad'); nothing was imported",
    ),
}


def hand_made_legacy(path: Path, damage: str) -> None:
    """A legacy database whose tables have no constraints (as some users' do): two
    results, then the damage."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.exec_driver_sql(
            "CREATE TABLE clusteringresult (id TEXT, model_name TEXT, created_at DATETIME)"
        )
        c.exec_driver_sql(
            "CREATE TABLE embeddingcluster "
            "(id TEXT, embedding_id TEXT, clustering_result_id TEXT, cluster_id TEXT)"
        )
        c.exec_driver_sql(
            "INSERT INTO clusteringresult VALUES (?, 'm1', '2026-11-30 07:05:54.133651'), "
            "(?, 'm2', '2026-11-30 07:05:55')",
            (R1, R2),
        )
        for row in GOOD_ROWS:
            c.exec_driver_sql(
                "INSERT INTO embeddingcluster VALUES (?, ?, ?, ?)", (row[0], row[1], R1, row[2])
            )
        c.exec_driver_sql(
            "INSERT INTO embeddingcluster VALUES ('01a22b4640ff7759bef1afbe9a7e6403', "
            "'f8c2becf931aed15f5d3ef2d059d9f3e', ?, '01a22b4640ff7759bef1afbb2932bae2')",
            (R2,),
        )
        for statement in filter(None, (s.strip() for s in damage.split(";"))):
            c.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_legacy_row_is_refused_before_its_result_is_written(
    db_url: str, tmp_path: Path, name: str
) -> None:
    damage, message = MALFORMED[name]
    src = tmp_path / "legacy.db"
    hand_made_legacy(src, damage)
    for args in ([], ["--dry-run"]):
        result = CliRunner().invoke(cli, ["--db", db_url, "import-legacy", str(src), *args])
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == f"Error: {message}; {AGAIN}\n"
    with EventStore.open(db_url) as store:
        assert store.runs() == []  # not even a RunStarted: nothing blocks a later import
    hand_made_legacy(tmp_path / "fixed.db", "")
    fixed = CliRunner().invoke(
        cli, ["--db", db_url, "import-legacy", str(tmp_path / "fixed.db"), "-q"]
    )
    assert fixed.exit_code == 0, fixed.output
    with EventStore.open(db_url) as store:
        assert len(store.runs()) == 2


CHANGES = {
    # an embedding id of a row already imported (same count and clusters)
    "a stored row": "UPDATE embeddingcluster SET embedding_id = '{new}' WHERE id = '{first}'",
    # a row more for the partly imported result (its RunStarted counts 250)
    "a row added": (
        "INSERT INTO embeddingcluster VALUES ('{new}', '{new}', '{good}', '{cluster}')"
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_source_changed_after_an_interrupted_import_is_skipped_with_a_warning(
    store: EventStore,
    db_url: str,
    legacy: Legacy,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    head = interrupt_import(store, legacy, monkeypatch)
    src = sqlite_path(legacy.url)
    first = min(legacy.rows[legacy.good], key=lambda r: r.id.bytes)
    engine = create_engine(legacy.url)
    with engine.begin() as c:
        c.exec_driver_sql(
            CHANGES[change].format(
                new=uuid.uuid4().hex,
                first=first.id.hex,
                good=legacy.good.hex,
                cluster=first.cluster_id.hex,
            )
        )
    engine.dispose()
    result = CliRunner().invoke(cli, ["--db", db_url, "import-legacy", src, "--json"])
    assert result.exit_code == 0, result.output
    rows = 251 if change == "a row added" else 250
    assert result.stderr == (
        f"Warning: legacy result {legacy.good} changed after its import was interrupted "
        f"(all-mpnet-base-v2, {rows} rows now); skipped: its partial run stays as it was (the "
        "log is append-only); restore the source to finish it\n"
    )
    doc = json.loads(result.stdout)
    assert (doc["n_source_changed"], doc["n_imported"], doc["n_resumed"]) == (1, 2, 0)
    states = {r["run_id"]: r["before_import"] for r in doc["runs"]}
    assert states[str(legacy.good)] == "changed"
    assert store.head(legacy.good) == head  # nothing appended to the partial run
    assert store.head(legacy.empty) > 0 and store.head(legacy.twice) > 0  # the rest imported


def test_a_restored_source_finishes_the_skipped_run(
    store: EventStore, legacy: Legacy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    interrupt_import(store, legacy, monkeypatch)
    src = sqlite_path(legacy.url)
    kept = tmp_path / "kept.db"
    shutil.copy(src, kept)
    engine = create_engine(legacy.url)
    with engine.begin() as c:
        c.exec_driver_sql(
            "UPDATE embeddingcluster SET embedding_id = ? WHERE clustering_result_id = ?",
            (uuid.uuid4().hex, legacy.good.hex),
        )
    engine.dispose()
    with LegacySource(src) as source:
        assert len(import_legacy(source, store, chunk=64).changed) == 1
    shutil.copy(kept, src)
    with LegacySource(src) as source:
        report = import_legacy(source, store, chunk=64)
    assert (report.resumed, report.changed) == (1, [])
    check_imported(store, legacy)


def test_a_dry_run_only_reads(tmp_path: Path) -> None:
    """--dry-run opens the store read-only; where there is none yet it creates nothing and
    reports every legacy result as new (what the first import would do)."""
    src = tmp_path / "legacy.db"
    hand_made_legacy(src, "")
    db = tmp_path / "new.db"
    dry = CliRunner().invoke(cli, ["--db", str(db), "import-legacy", str(src), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert sorted(os.listdir(tmp_path)) == ["legacy.db"]
    real = CliRunner().invoke(cli, ["--db", str(db), "import-legacy", str(src), "-q"])
    assert real.exit_code == 0, real.output
    assert dry.stdout.replace("Would import", "Imported") == real.stdout

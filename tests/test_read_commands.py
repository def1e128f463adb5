"""Commands that only read never create or change anything (issue 16).

A missing SQLite file, or a database or schema that holds no store, is one
``Error: no clusterstore database at ...`` line for every read command, and nothing is
created; a URL without a database name and ``--db /dev/null`` are refused before anything
is opened. An existing store is opened read-only by these commands: its bytes stay as they
were, and a role that may only SELECT can list, show, verify and export it. The write
commands still create a store on first use. (The read-only mount is in test_bad_input.py.)
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

import clusterstore
from clusterstore.eventstore import EventStore, NoStoreError, ReadOnlyDatabaseError
from tests.conftest import pg_base_url, pg_schema_of
from tests.test_bad_input import assert_one_error_line, invoke
from tests.test_cli_cluster import blobs
from tests.test_cli_init import shown

RUN = "0123abcd"
READ_COMMANDS: dict[str, list[str]] = {
    "runs list": ["runs", "list"],
    "runs show": ["runs", "show", RUN],
    "runs events": ["runs", "events", RUN],
    "runs verify": ["runs", "verify", "--all"],
    "runs compare": ["runs", "compare", RUN, RUN],
    "export": ["export", RUN, "-o", "{out}/x.csv"],
    "report": ["report", RUN, "-o", "{out}/x.html"],
    "which": ["which", str(uuid.UUID(int=1))],
    "datasette-metadata": ["datasette-metadata"],
    "projections status": ["projections", "status"],
    "projections lookup-index": ["projections", "lookup-index"],  # shown, not switched
}


def args_of(name: str, out: Path) -> list[str]:
    return [a.format(out=out) for a in READ_COMMANDS[name]]


def tables(db_url: str) -> list[str]:
    engine = create_engine(db_url if "://" in db_url else f"sqlite:///{db_url}")
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", list(READ_COMMANDS))
def test_read_command_on_a_missing_store_creates_nothing(
    backend: str, db_url: str, tmp_path: Path, name: str
) -> None:
    """SQLite: the file does not exist. PostgreSQL: the schema exists but holds no store."""
    out = tmp_path / "out"
    out.mkdir()
    listing = sorted(os.listdir(tmp_path))
    result = invoke(db_url, args_of(name, out))
    assert_one_error_line(
        result,
        1,
        f"no clusterstore database at {shown(db_url)}; nothing was created "
        "(`clusterstore init` creates one)",
    )
    assert sorted(os.listdir(tmp_path)) == listing and not os.listdir(out)
    if "://" in db_url:
        assert tables(db_url) == []


@pytest.mark.parametrize("name", list(READ_COMMANDS))
def test_read_command_in_a_missing_directory_finds_no_store(tmp_path: Path, name: str) -> None:
    """Not "cannot create ...": a command that reads would create nothing anyway."""
    path = tmp_path / "nope" / "x.db"
    result = invoke(str(path), args_of(name, tmp_path))
    assert_one_error_line(
        result,
        1,
        f"no clusterstore database at {path}; nothing was created "
        "(`clusterstore init` creates one)",
    )
    assert sorted(os.listdir(tmp_path)) == []
    with pytest.raises(NoStoreError):
        EventStore.open(path, create=False)


def test_an_empty_file_is_no_store_and_stays_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    result = invoke(str(path), ["runs", "list"])
    assert_one_error_line(
        result,
        1,
        f"no clusterstore database at {path}; nothing was created "
        "(`clusterstore init` creates one)",
    )
    assert path.read_bytes() == b"" and sorted(os.listdir(tmp_path)) == ["empty.db"]


@pytest.mark.parametrize("args", [["runs", "list"], ["init"]])
def test_url_without_a_database_name_is_refused(args: list[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/"
    result = invoke(url, args)
    assert_one_error_line(
        result,
        1,
        f"{url} names no database; give postgresql://USER@HOST/DATABASE (the server's "
        "default database is never used)",
    )


@pytest.mark.parametrize("args", [["runs", "list"], ["init"]])
def test_dev_null_is_refused_before_sqlite_writes(args: list[str]) -> None:
    journal = Path("/dev/null-journal")
    assert not journal.exists()
    result = invoke("/dev/null", args)
    assert_one_error_line(
        result, 1, "/dev/null is not a regular file; give the path of a database file"
    )
    assert not journal.exists() and not Path("/dev/null-wal").exists()


def test_write_commands_still_create(db_url: str) -> None:
    assert invoke(db_url, ["init"]).exit_code == 0
    assert "cs_meta" in tables(db_url)
    assert invoke(db_url, ["runs", "list", "--json"]).stdout == "[]\n"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stored(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A store with one completed run (SQLite: closed, so its file holds everything)."""
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(300))
    result = invoke(db_url, ["cluster", str(emb), "--model", "m", "--k", "3", "--json", "-q"])
    assert result.exit_code == 0, result.output
    with EventStore.open(db_url) as store:
        run = str(store.runs()[0].run_id)
    yield db_url, run


def test_read_commands_leave_the_store_byte_for_byte(
    stored: tuple[str, str], tmp_path: Path
) -> None:
    db, run = stored
    if "://" in db:
        pytest.skip("a server database has no file to compare (its sessions are read-only)")
    path = Path(db)
    before = digest(path)
    for name in READ_COMMANDS:
        args = [a.replace(RUN, run) for a in args_of(name, tmp_path)]
        assert invoke(db, args).exit_code in (0, 1), name
        assert digest(path) == before, name


def test_a_read_only_store_refuses_writes(stored: tuple[str, str]) -> None:
    db, _ = stored
    with EventStore.open(db, create=False) as store:
        assert store.runs()
        with pytest.raises(ReadOnlyDatabaseError), store.recorder.transaction(write=True) as c:
            c.exec_driver_sql("CREATE TABLE cs_probe (x INTEGER)")
    # SQLite: a file that is not there; PostgreSQL: a search_path schema that does not exist
    if "://" in db:
        missing = db.replace(pg_schema_of(db), pg_schema_of(db) + "x")
    else:
        missing = str(Path(db).with_name("nope.db"))
    with pytest.raises(NoStoreError):
        EventStore.open(missing, create=False)


def test_api_reading_verbs_do_not_write(stored: tuple[str, str]) -> None:
    """``clusterstore.open`` may create a store; reading an existing one writes nothing."""
    db, run = stored
    if "://" in db:
        pytest.skip("a server database has no file to compare")
    before = digest(Path(db))
    with clusterstore.open(db) as store:
        assert [r.run_id for r in store.runs()] == [uuid.UUID(run)]
        store.run(run)
        store.labels(run)
        assert all(r.ok for r in store.verify())
    assert digest(Path(db)) == before


@pytest.mark.postgres_only
def test_a_select_only_role_can_read(stored: tuple[str, str], tmp_path: Path) -> None:
    db, run = stored
    url = make_url(db)
    schema = pg_schema_of(db)
    role = f"cs_reader_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_base_url())
    with admin.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'))
    reader = url.set(username=role).render_as_string(hide_password=False)
    try:
        for args in (
            ["runs", "list", "--json"],
            ["runs", "show", run],
            ["runs", "verify", "--all"],
            ["export", run, "-o", str(tmp_path / "x.csv")],
            ["projections", "status"],
            ["projections", "lookup-index"],
        ):
            result = invoke(reader, args)
            assert result.exit_code == 0, (args, result.output)
        assert (tmp_path / "x.csv").stat().st_size > 0
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()

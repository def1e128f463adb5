"""The CLI skeleton: ``init``, ``--db``, ``--version`` and the error contract
(``Error: <message>`` on stderr, exit code 1; usage errors exit 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text

from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, ForeignDatabaseError, NotADatabaseError, __version__
from clusterstore.eventstore.config import resolve_url
from tests.conftest import partitions_of
from tests.contracts.support import snapshot


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"CLUSTERSTORE_DB": None, **(env or {})})


def assert_error(result: Result, message: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"Error: {message}\n")
    assert isinstance(result.exception, SystemExit)  # a message, never a traceback


def shown(db: str) -> str:
    """How the CLI names a database (a path, or the URL without its password)."""
    return resolve_url(db).render_as_string(hide_password=True) if "://" in db else db


def sqlalchemy_url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{db}"


def other_apps_table(db: str) -> list[tuple[object, ...]]:
    """Create (once) and read back a table of another application in the database."""
    engine = create_engine(resolve_url(db))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS embeddingcluster (id TEXT, cluster INT)"))
        if not conn.execute(text("SELECT count(*) FROM embeddingcluster")).scalar():
            conn.execute(text("INSERT INTO embeddingcluster VALUES ('a', 1), ('b', 2)"))
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM embeddingcluster ORDER BY id"))]
        cols = [c["name"] for c in inspect(conn).get_columns("embeddingcluster")]
    engine.dispose()
    return [*rows, tuple(cols)]


def test_version() -> None:
    result = run("--version")
    assert (result.exit_code, result.output) == (0, f"clusterstore, version {__version__}\n")


def ready(db_url: str, backend: str) -> str:
    """What ``init`` prints for a store of the backend's fixture."""
    n = partitions_of(backend)
    return f"clusterstore ready at {shown(db_url)}" + (
        f" (partitioned by run: {n} partitions)\n" if n is not None else "\n"
    )


def test_init_is_idempotent(db_url: str, backend: str) -> None:
    for _ in range(2):
        result = run("--db", db_url, "init")
        assert (result.exit_code, result.output) == (0, ready(db_url, backend))
    with EventStore.open(db_url) as store:
        first = snapshot(store)
    result = run("init", env={"CLUSTERSTORE_DB": db_url})  # the environment variable
    assert (result.exit_code, result.output) == (0, ready(db_url, backend))
    with EventStore.open(db_url) as store:
        assert snapshot(store) == first


def test_db_is_a_directory(tmp_path: Path) -> None:
    assert_error(
        run("--db", str(tmp_path), "init"),
        f"{tmp_path} is a directory; give the path of a database file",
    )


@pytest.mark.parametrize(
    "content",
    [b"hello, world\n", b"\x00" * 4096, b"SQLite format 2\x00" + b"\x01" * 100, b"x"],
    ids=["text", "zeros", "almost-sqlite", "one-byte"],
)
def test_db_is_not_a_database(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    assert_error(
        run("--db", str(path), "init"), f"{path} is not a SQLite database; it was left untouched"
    )
    with pytest.raises(NotADatabaseError):
        EventStore.open(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal, -journal


def test_missing_directory_and_unusable_locations(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "x.db"
    assert_error(
        run("--db", str(missing), "init"),
        f"cannot create {missing}: the directory {missing.parent} does not exist",
    )
    assert_error(run("--db", " ", "init"), "the database location is empty; give --db PATH or URL")
    assert_error(
        run("--db", "sqlite:///:memory:", "init"),
        "an in-memory SQLite database cannot hold a store; give a file path",
    )
    assert not (tmp_path / "nope").exists()


@pytest.mark.sqlite_only
def test_another_apps_sqlite_file_is_refused_byte_for_byte(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE embeddingcluster (id TEXT PRIMARY KEY, cluster INT)")
        conn.execute("INSERT INTO embeddingcluster VALUES ('a', 1)")
    conn.close()
    before = path.read_bytes()
    assert_error(
        run("--db", str(path), "init"),
        f"{path} already holds tables that are not clusterstore's (embeddingcluster); use "
        "another database, or run `clusterstore init --allow-existing` to add the store "
        "beside them",
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.db"]


def test_another_apps_database(db_url: str, backend: str) -> None:
    theirs = other_apps_table(db_url)
    message = (
        f"{shown(db_url)} already holds tables that are not clusterstore's (embeddingcluster); "
        "use another database, or run `clusterstore init --allow-existing` to add the store "
        "beside them"
    )
    assert_error(run("--db", db_url, "init"), message)
    with pytest.raises(ForeignDatabaseError) as info:
        EventStore.open(db_url)
    assert str(info.value) == message
    assert other_apps_table(db_url) == theirs
    engine = create_engine(resolve_url(db_url))
    assert inspect(engine).get_table_names() == ["embeddingcluster"]
    engine.dispose()
    # asked for explicitly: the store is added beside the table, which stays as it was; the
    # read models need that name, so they cannot be made (a warning, the store is ready)
    result = run("--db", db_url, "init", "--allow-existing")
    assert (result.exit_code, result.stdout) == (0, ready(db_url, backend))
    assert result.stderr == (
        "Warning: the store is created, but the read models are not up to date: the database "
        "already has a table or view named 'embeddingcluster' that clusterstore did not "
        "create; the embeddingcluster read model needs that name (rename it, or keep the "
        "store in another database); `store.catch_up()` or `clusterstore projections "
        "catch-up` retries\n"
    )
    assert other_apps_table(db_url) == theirs
    # from now on it is a clusterstore database (with a neighbour)
    assert run("--db", db_url, "init").exit_code == 0
    with EventStore.open(db_url) as store:
        assert store.runs() == []
    assert other_apps_table(db_url) == theirs


def test_a_newer_or_foreign_store_is_refused(db_url: str) -> None:
    EventStore.open(db_url).close()
    engine = create_engine(resolve_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE cs_meta SET value = '99' WHERE key = 'schema_version'"))
    assert_error(
        run("--db", db_url, "init"),
        f"{shown(db_url)} has store schema version 99, newer than this clusterstore supports "
        "(1); upgrade clusterstore",
    )
    with engine.begin() as conn:
        conn.execute(text("UPDATE cs_meta SET value = 'other' WHERE key = 'application'"))
    engine.dispose()
    assert_error(run("--db", db_url, "init"), f"{shown(db_url)} is not a clusterstore database")


def test_usage_errors_exit_2() -> None:
    result = run("init", "--bogus")
    assert result.exit_code == 2
    assert "Error: No such option '--bogus'." in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://u:secret@127.0.0.1:1/x",
            "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:1/x: "
            "connection failed: ",
        ),
        (
            "postgresql+psycopg://u:s%40cret@127.0.0.1:1/x",
            "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:1/x: ",
        ),
        ("postgresql://u:secret@127.0.0.1:port/x", "cannot parse the database URL "),
        (  # an unparseable URL shows nothing after the user name (not even the host)
            "postgresql://u:secret@127.0.0.1:port/x",
            "cannot parse the database URL postgresql://u:***@... (check its port and "
            "percent-encode special characters of the password)",
        ),
        (  # a raw '@' in the password: the password is the text up to the last '@'
            "postgresql://u:se@cret@127.0.0.1:1/x",
            "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:1/x: ",
        ),
        (
            "postgresql://u:secret@@127.0.0.1:1/x",
            "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:1/x: ",
        ),
        (
            "postgresql+asyncpg://u:secret@127.0.0.1/x",
            "postgresql+asyncpg://u:***@127.0.0.1/x: only the psycopg (3) driver is supported",
        ),
        (  # postgres://, libpq's other scheme, is PostgreSQL too
            "postgres://u:secret@127.0.0.1:1/x",
            "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:1/x: ",
        ),
        (
            "postgres+asyncpg://u:secret@127.0.0.1/x",
            "postgres+asyncpg://u:***@127.0.0.1/x: only the psycopg (3) driver is supported",
        ),
        ("mysql://u:secret@127.0.0.1/x", "unsupported database mysql://u:***@127.0.0.1/x: "),
        ("postgresql://u:secret@127.0.0.1:1/x?bogus=1", "database error at "),
        (  # a password given as a query parameter is masked too
            "postgresql://u@127.0.0.1:1/x?password=secret&sslpassword=cret",
            "cannot use the database at postgresql+psycopg://u@127.0.0.1:1/x?password=***&"
            "sslpassword=***: ",
        ),
        (  # an unclosed IPv6 bracket: unparseable, nothing shown after the user name
            "postgresql://u:secret@[::1/x",
            "cannot parse the database URL postgresql://u:***@... (",
        ),
    ],
)
def test_a_password_is_never_printed(url: str, message: str) -> None:
    for result in (run("--db", url, "init"), run("init", env={"CLUSTERSTORE_DB": url})):
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr.startswith(f"Error: {message}")
        for part in ("secret", "s%40cret", "se@", "cret", "@@", "127.0.0.1:port"):
            assert part not in result.stderr, part
        assert isinstance(result.exception, SystemExit)

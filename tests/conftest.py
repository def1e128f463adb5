"""Fixtures shared by the whole suite.

Every test that takes ``backend``, ``db_url`` or ``store`` runs once per entry of
``BACKENDS``: a SQLite file in a temporary directory, and PostgreSQL in a fresh schema of
the database named by ``$CLUSTERSTORE_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards. PostgreSQL cases skip
when no server answers, except in CI (``$CI`` set), where they fail.

**Enrolling a backend in the shared suite** (the contract tests in ``tests/contracts/``
and every other backend-parametrized test): add one ``BackendFixture`` to ``BACKENDS`` with a
context manager that yields the location of a fresh, empty database (and removes it
afterwards) and the ``"module:Class"`` of its recorder, as registered in
``clusterstore.eventstore.backends.BACKENDS``. ``$CLUSTERSTORE_TEST_BACKENDS``
(comma-separated names) runs the suite on some of them only, e.g. a backend author's
``CLUSTERSTORE_TEST_BACKENDS=mydb pytest tests/contracts``. Cases marked ``sqlite_only`` or
``postgres_only`` run on that database alone.

``postgres-partitioned`` is PostgreSQL again, with every store it creates hash-partitioned
by run (``init --partitions``): the whole shared suite, ``postgres_only`` cases included,
also runs on a partitioned log and read model. Cases marked ``not_partitioned`` (what the
layout cannot change) skip it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from clusterstore.eventstore import EventStore

PG_ENV = "CLUSTERSTORE_TEST_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent


def pg_base_url() -> URL:
    return make_url(os.environ.get(PG_ENV) or PG_DEFAULT).set(drivername="postgresql+psycopg")


_pg_state: dict[str, object] = {}


def pg_available() -> tuple[bool, str]:
    if "ok" not in _pg_state:
        try:
            engine = create_engine(pg_base_url(), connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state.update(ok=True, why="")
        except Exception as e:  # any failure to connect means "no server here"
            _pg_state.update(ok=False, why=f"{type(e).__name__}: {str(e).splitlines()[0]}")
    return bool(_pg_state["ok"]), str(_pg_state["why"])


def require_pg() -> None:
    ok, why = pg_available()
    if not ok:
        message = f"PostgreSQL is not reachable at {pg_base_url().render_as_string()}: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (PostgreSQL is required in CI)")
        pytest.skip(message)


def make_pg_schema_url(*, partitions: int | None = None) -> tuple[str, str]:
    """A URL whose search_path is a new, empty schema: isolation per test. ``partitions``:
    the URL also sets ``clusterstore.partitions``, so a store created there is partitioned
    by run (as by ``init --partitions``)."""
    require_pg()
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_base_url())
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    options = f"-csearch_path={name}"
    if partitions is not None:
        from clusterstore.eventstore.postgres import PARTITIONS_SETTING

        options += f" -c{PARTITIONS_SETTING}={partitions}"
    url = pg_base_url().update_query_dict({"options": options})
    return url.render_as_string(hide_password=False), name


def pg_schema_of(url: str) -> str:
    """The schema a ``make_pg_schema_url`` URL's search_path names."""
    options = str(make_url(url).query["options"]).split()
    return options[0].removeprefix("-csearch_path=")


def drop_pg_schema(name: str) -> None:
    engine = create_engine(pg_base_url())
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    """A new SQLite file's path in ``directory`` (removed with the directory)."""
    yield str(directory / "store.db")


@contextmanager
def postgres_database(directory: Path) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema, dropped afterwards."""
    url, schema_name = make_pg_schema_url()
    try:
        yield url
    finally:
        drop_pg_schema(schema_name)


# The partition count of the ``postgres-partitioned`` backend: small, so a test's store
# and each read-model generation stay cheap to create, and more than one, so runs spread.
TEST_PARTITIONS = 4


@contextmanager
def postgres_partitioned_database(directory: Path) -> Iterator[str]:
    """Like ``postgres_database``, but every store created at the URL is hash-partitioned
    by run into ``TEST_PARTITIONS`` (the URL sets ``clusterstore.partitions``; an explicit
    ``init --partitions`` gives the same layout), so the whole shared suite also runs on a
    partitioned log and read model."""
    url, schema_name = make_pg_schema_url(partitions=TEST_PARTITIONS)
    try:
        yield url
    finally:
        drop_pg_schema(schema_name)


@dataclass(frozen=True)
class BackendFixture:
    fresh_database: Callable[[Path], AbstractContextManager[str]]
    recorder: str  # "module:Class", as in clusterstore.eventstore.backends.BACKENDS


ALL_BACKENDS: dict[str, BackendFixture] = {
    "sqlite": BackendFixture(sqlite_database, "clusterstore.eventstore.sqlite:SQLiteRecorder"),
    "postgres": BackendFixture(
        postgres_database, "clusterstore.eventstore.postgres:PostgresRecorder"
    ),
    "postgres-partitioned": BackendFixture(
        postgres_partitioned_database, "clusterstore.eventstore.postgres:PostgresRecorder"
    ),
}
TEST_BACKENDS_ENV = "CLUSTERSTORE_TEST_BACKENDS"
_chosen = [b.strip() for b in os.environ.get(TEST_BACKENDS_ENV, "").split(",") if b.strip()]
_unknown = [b for b in _chosen if b not in ALL_BACKENDS]
if _unknown:
    raise pytest.UsageError(f"${TEST_BACKENDS_ENV}: unknown backend {_unknown[0]!r}")
BACKENDS = _chosen or list(ALL_BACKENDS)
_ONLY: dict[str, tuple[tuple[str, ...], str]] = {
    "sqlite_only": (("sqlite",), "SQLite-only case"),
    "postgres_only": (("postgres", "postgres-partitioned"), "PostgreSQL-only case"),
}
# Cases marked ``not_partitioned`` (what partitioning by run cannot change, e.g. URL masking)
# skip the partitioned variant of a backend.
_PARTITIONED = ("postgres-partitioned",)


def partitions_of(backend: str) -> int | None:
    """How many partitions by run the stores this backend's fixture makes have."""
    return TEST_PARTITIONS if backend in _PARTITIONED else None


def family(backend: str) -> str:
    """The backend's database without its layout variant: ``postgres-partitioned`` ->
    ``postgres`` (for tables of expectations keyed by database)."""
    return backend.removesuffix("-partitioned")


def fresh_database(backend: str, directory: Path) -> AbstractContextManager[str]:
    """A fresh, empty database of ``backend`` (its location: a path or a URL)."""
    return ALL_BACKENDS[backend].fresh_database(directory)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    for marker, (only, why) in _ONLY.items():
        if name not in only and request.node.get_closest_marker(marker):
            pytest.skip(why)
    if name in _PARTITIONED and request.node.get_closest_marker("not_partitioned"):
        pytest.skip("a case that partitioning by run does not touch")
    return name


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for the backend: a file path or a URL."""
    with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    s = EventStore.open(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes that import the project from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("CLUSTERSTORE_DB", None)
    return env

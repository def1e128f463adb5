"""Backends behind one interface: the registry chooses them by URL scheme, and each
classifies its driver's errors by class and code (SQLite result codes, PostgreSQL SQLSTATE),
never by message text."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from clusterstore.benchmarks import databases, legacy, runner
from clusterstore.cli import bench as cli_bench
from clusterstore.eventstore import (
    ConfigurationError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    EventStore,
    ImmutableLogError,
    ReadOnlyDatabaseError,
)
from clusterstore.eventstore import backends as registry
from clusterstore.eventstore.backends import Backend, backend_for

from .conftest import ALL_BACKENDS, family


def test_every_registered_backend_has_a_test_fixture() -> None:
    """A registry line without a fixture in tests/conftest.py would go untested."""
    assert {b.target for b in registry.BACKENDS.values()} == {
        b.recorder for b in ALL_BACKENDS.values()
    }


def test_the_registry_chooses_the_recorder_by_scheme() -> None:
    from clusterstore.eventstore.postgres import PostgresRecorder
    from clusterstore.eventstore.sqlite import SQLiteRecorder

    assert backend_for(make_url("sqlite:///x.db")) is SQLiteRecorder
    assert backend_for(make_url("postgresql://u@h/db")) is PostgresRecorder
    assert backend_for(make_url("postgres://u@h/db")) is PostgresRecorder


def test_an_unregistered_scheme_is_an_error_never_another_backend() -> None:
    with pytest.raises(ConfigurationError, match=r"^unsupported database oracle://u@h/db: "):
        backend_for(make_url("oracle://u@h/db"))


def test_a_backend_whose_driver_is_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = Backend("clusterstore_no_such_module:Recorder", "MyDB", "mydb-driver 2", "mydb")
    monkeypatch.setitem(registry.BACKENDS, "mydb", entry)
    with pytest.raises(ConfigurationError) as e:
        EventStore.open("mydb://u@h/db")
    assert str(e.value) == "MyDB support needs mydb-driver 2: pip install 'clusterstore[mydb]'"


# ---------------------------------------------------------------------------- errors


def _sqlite_error(code: int, name: str, message: str) -> sqlite3.Error:
    e = sqlite3.OperationalError(message)
    e.sqlite_errorcode = code
    e.sqlite_errorname = name
    return e


IMMUTABLE = "clusterstore: cs_events is append-only; UPDATE is not allowed"
LOCKED = "{where}: the database is locked"
READ_ONLY = "{where}: the database is read-only (no)"
UNAVAILABLE = "cannot use the database at {where}: "
DRIVER_ERRORS = {
    # backend: [(driver error, expected exception type, expected message start)];
    # the class or code decides, whatever the words say
    "sqlite": [
        (_sqlite_error(5, "SQLITE_BUSY", "zzz"), DatabaseBusyError, LOCKED),
        (_sqlite_error(517, "SQLITE_BUSY_SNAPSHOT", "x"), DatabaseBusyError, LOCKED),
        (_sqlite_error(8, "SQLITE_READONLY", "no"), ReadOnlyDatabaseError, READ_ONLY),
        (_sqlite_error(1811, "SQLITE_CONSTRAINT_TRIGGER", IMMUTABLE), ImmutableLogError, IMMUTABLE),
        (
            _sqlite_error(1, "SQLITE_ERROR", "database is locked, read-only"),
            DatabaseUnavailableError,
            UNAVAILABLE + "database is locked, read-only",
        ),
    ],
    "postgres": [
        (psycopg.errors.LockNotAvailable("zzz"), DatabaseBusyError, LOCKED),
        (psycopg.errors.ReadOnlySqlTransaction("no"), ReadOnlyDatabaseError, READ_ONLY),
        (psycopg.errors.RaiseException(IMMUTABLE), ImmutableLogError, IMMUTABLE),
        (psycopg.errors.AdminShutdown("bye"), DatabaseUnavailableError, UNAVAILABLE + "bye"),
        (
            psycopg.errors.InternalError_("lock timeout, read only"),
            Exception,
            "database error at {where}: lock timeout, read only",
        ),
    ],
}


@pytest.mark.parametrize("case", range(5))
def test_driver_errors_are_classified_by_code_not_text(
    backend: str, store: EventStore, case: int
) -> None:
    orig, kind, start = DRIVER_ERRORS[family(backend)][case]
    wrapped = sa_exc.DBAPIError.instance("SELECT 1", {}, orig, type(orig).__mro__[1])
    with pytest.raises(kind) as e, store.transaction():
        raise wrapped
    assert type(e.value) is kind or kind is Exception
    assert str(e.value).startswith(start.format(where=store.display_url))
    assert e.value.__cause__ is wrapped


def test_the_cli_names_the_harness_steps_and_defaults() -> None:
    """cli/bench.py repeats these (to import the harness only when the command runs)."""
    assert tuple(runner.STEPS) == cli_bench.STEPS
    assert {g: tuple(s) for g, s in runner.GROUPS.items()} == cli_bench.GROUPS
    assert cli_bench.BACKENDS == runner.BACKENDS
    assert cli_bench.LEGACY_CAP == legacy.CAP
    assert (cli_bench.PG_ENV, cli_bench.PG_DEFAULT) == (databases.PG_ENV, databases.PG_DEFAULT)


@pytest.mark.postgres_only
def test_a_batch_transaction_commits_without_waiting_for_the_wal_flush(
    backend: str, store: EventStore
) -> None:
    """The projection runner's batches (``synchronous_commit=False``); other transactions
    keep the server's setting."""
    with store.connection() as conn:
        with store.transaction(write=True, conn=conn, synchronous_commit=False) as c:
            relaxed = c.exec_driver_sql("SHOW synchronous_commit").scalar()
        with store.transaction(write=True, conn=conn) as c:
            normal = c.exec_driver_sql("SHOW synchronous_commit").scalar()
    assert (relaxed, normal) == ("off", "on")

"""PostgreSQL errors raised inside COPY (the log's appends and the read model's rows go
through the driver's own COPY, not SQLAlchemy) are the store's errors: one ``Error:`` line
naming what happened, never a psycopg traceback, and nothing of the transaction written.

The COPY is made to wait: another session holds a lock on its table (SHARE, which
conflicts with the ROW EXCLUSIVE lock COPY takes), and the writer's own
``statement_timeout`` or ``lock_timeout`` (set in the URL's ``options``, as an
administrator would set it for a role) cancels it while it waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from clusterstore import projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from clusterstore.projections.schema import ec_tables
from tests.contracts.support import snapshot
from tests.test_bad_input import assert_one_error_line
from tests.test_cli_cluster import blobs

pytestmark = pytest.mark.postgres_only


def with_option(db_url: str, option: str) -> str:
    url = make_url(db_url)
    options = f"{url.query.get('options', '')} -c{option}".strip()
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


@contextmanager
def table_locked(db_url: str, table: str) -> Iterator[None]:
    """Another session holds a SHARE lock on ``table`` (COPY into it waits) until the end."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
            yield
    finally:
        engine.dispose()


def invoke(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *args], env={"CLUSTERSTORE_DB": None})


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("statement_timeout=300", "the server cancelled the statement (canceling statement due"),
        ("lock_timeout=300", "the database is locked by another writer"),
    ],
)
def test_a_timeout_inside_the_logs_copy(
    backend: str,
    db_url: str,
    tmp_path: Path,
    option: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a lock_timeout is retried like any busy database until the lock wait runs out
    monkeypatch.setenv("CLUSTERSTORE_LOCK_WAIT", "2")
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(500))
    with EventStore.open(db_url) as store:
        projections.catch_up(store)
        before = snapshot(store)
    with table_locked(db_url, "cs_events"):
        result = invoke(
            with_option(db_url, option), "cluster", str(emb), "--model", "m", "--k", "3"
        )
    assert_one_error_line(result, 1, "...")
    assert message in result.stderr, result.stderr
    assert "password" not in result.stderr
    with EventStore.open(db_url) as store:
        assert snapshot(store) == before  # nothing of the run was written


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("statement_timeout=300", "the server cancelled the statement (canceling statement due"),
        # not retried: the URL's lock_timeout, not the lock wait (60 s), is what gave up
        (
            "lock_timeout=300",
            "the database is locked by another writer; gave up waiting for it after 0.3 s, "
            "the lock_timeout set in the database URL's options (it overrides the lock wait "
            "of 60 s), nothing was written (retry later, or raise lock_timeout in the URL's",
        ),
    ],
)
def test_a_timeout_inside_the_read_models_copy(
    backend: str, db_url: str, tmp_path: Path, option: str, message: str
) -> None:
    emb = tmp_path / "emb.npy"
    np.save(emb, blobs(500))
    with EventStore.open(db_url) as store:
        projections.catch_up(store)
    slow = with_option(db_url, option)
    with table_locked(db_url, ec_tables(1).assignments.name):
        result = invoke(slow, "cluster", str(emb), "--model", "m", "--k", "3", "-q")
        assert result.exit_code == 0, result.output  # the run is stored; the read models warn
        assert result.stderr.startswith(
            "Warning: the log is written, but the read models are not up to date: "
        ), result.stderr
        assert message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1
        caught = invoke(slow, "projections", "catch-up")
    assert_one_error_line(caught, 1, "...")
    assert message in caught.stderr, caught.stderr
    assert invoke(db_url, "projections", "catch-up", "-q").exit_code == 0
    with EventStore.open(db_url) as store:
        run = store.runs()[0].run_id
        assert projections.first_read_model_difference(store, run) is None

"""A PostgreSQL password is never printed: not in errors, not in ``--json`` or text output
of any command that names the database, not in what a command records, not on a child
process's command line.

Two URLs carry the password ``s3cret``: one that cannot connect (port 1), and one that
does (the local server trusts 127.0.0.1, so any password is accepted) with its search_path
on a fresh schema. test_cli_init.py checks the URL forms that fail to parse or to connect
for ``init``; this goes through every command that prints the store's location.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from clusterstore.benchmarks import runner as bench_runner
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore
from tests.conftest import drop_pg_schema, make_pg_schema_url, pg_base_url
from tests.test_cli_cluster import blobs

SECRET = "s3cret"
UNREACHABLE = f"postgresql://clusterstore:{SECRET}@127.0.0.1:1/test"
MASKED = "postgresql+psycopg://clusterstore:***@127.0.0.1:1/test"

pytestmark = [pytest.mark.postgres_only, pytest.mark.not_partitioned]  # URL masking


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"CLUSTERSTORE_DB": None, **(env or {})})


def assert_no_secret(result: Result) -> None:
    assert SECRET not in result.stdout and SECRET not in result.stderr, result.output
    assert "s%33cret" not in result.output  # nor URL-escaped


@pytest.fixture
def secret_url(backend: str) -> Iterator[str]:
    """A reachable URL with a password (trust auth ignores it) on a fresh schema."""
    url, schema = make_pg_schema_url()
    try:
        yield make_url(url).set(password=SECRET).render_as_string(hide_password=False)
    finally:
        drop_pg_schema(schema)


def test_unreachable_every_command(backend: str, tmp_path: Path) -> None:
    from tests.test_legacy_import import hand_made_legacy

    np.save(tmp_path / "x.npy", blobs(100))
    hand_made_legacy(tmp_path / "legacy.db", "")  # a good source: the store is what fails
    commands = [
        ["init"],
        ["runs", "list", "--json"],
        ["runs", "verify", "--all", "--json"],
        ["runs", "show", "0190"],
        ["cluster", str(tmp_path / "x.npy"), "--model", "m", "--k", "2", "--json"],
        ["runs", "resume", "0190", "--json"],
        ["export", "0190", "-o", str(tmp_path / "out.csv")],
        ["projections", "status", "--json"],
        ["projections", "catch-up"],
        ["projections", "rebuild"],
        ["import-legacy", str(tmp_path / "legacy.db"), "--json"],
    ]
    for args in commands:
        for result in (
            invoke("--db", UNREACHABLE, *args),
            invoke(*args, env={"CLUSTERSTORE_DB": UNREACHABLE}),
        ):
            assert_no_secret(result)
            assert result.exit_code == 1, (args, result.output)
            assert result.stderr.startswith(f"Error: cannot use the database at {MASKED}: "), (
                args,
                result.stderr,
            )
            assert result.stderr.count("\n") == 1


def test_reachable_every_command_that_names_the_store(secret_url: str, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, blobs(200))
    shown = make_url(secret_url).set(drivername="postgresql+psycopg")
    masked = shown.render_as_string(hide_password=True)
    assert SECRET not in masked and "***" in masked

    def ok(*args: str) -> Result:
        result = invoke("--db", secret_url, *args)
        assert result.exit_code == 0, (args, result.output)
        assert_no_secret(result)
        return result

    missing = invoke("--db", secret_url, "runs", "list")  # read commands never create
    assert_no_secret(missing)
    assert missing.stderr.startswith(f"Error: no clusterstore database at {masked}; ")
    assert ok("init").stdout == f"clusterstore ready at {masked}\n"
    assert ok("runs", "list").stdout == f"No runs in {masked}.\n"
    assert ok("runs", "verify", "--all").stdout == f"No runs to verify in {masked}.\n"
    run = ok("cluster", str(path), "--model", "m", "--k", "2", "--quiet").stdout.strip()
    ok("cluster", str(path), "--model", "m", "--k", "2", "--json")
    for args in (
        ["runs", "list", "--json"],
        ["runs", "show", run, "--json"],
        ["runs", "show", run],
        ["runs", "verify", "--all", "--json"],
        ["runs", "events", run, "--limit", "3"],
        ["export", run, "-o", str(tmp_path / "out.csv")],
        ["projections", "catch-up"],
        ["projections", "status", "--json"],
        ["projections", "status"],
        ["projections", "rebuild"],
    ):
        ok(*args)
    # nothing the commands recorded holds it either
    with EventStore.open(secret_url) as store:
        for head in store.runs():
            for ev in store.read_raw(head.run_id):
                assert SECRET.encode() not in ev.payload


def test_follow_names_the_store_masked(secret_url: str, subprocess_env: dict[str, str]) -> None:
    """``catch-up --follow`` says what it follows on stderr (a log line of a long-running
    process): masked."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusterstore",
            "--db",
            secret_url,
            "projections",
            "catch-up",
            "--follow",
        ],
        env=subprocess_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        first = child.stderr.readline()
        child.send_signal(signal.SIGTERM)
        rest = child.communicate(timeout=60)[1]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, rest
    masked = make_url(secret_url).set(drivername="postgresql+psycopg")
    assert first == f"following {masked.render_as_string(hide_password=True)} (Ctrl-C to stop)\n"
    assert SECRET not in first + rest


def test_import_legacy_source_with_a_password(secret_url: str) -> None:
    """The legacy source is a URL too: an empty schema is refused, naming it masked."""
    result = invoke("--db", secret_url, "import-legacy", secret_url)
    assert result.exit_code == 1
    assert_no_secret(result)
    assert result.stderr.startswith("Error: ") and "***" in result.stderr


@pytest.mark.xdist_group("bench_schemas")  # makes bench_* schemas (test_cli_bench)
def test_bench_keeps_the_password_off_output_and_child_command_lines(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        argv.append([str(c) for c in cmd])
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(bench_runner.subprocess, "run", spy)
    reachable = pg_base_url().set(password=SECRET).render_as_string(hide_password=False)
    common = ["--backend", "postgres", "--n", "300", "--repeat", "1", "--steps", "append"]
    result = invoke("bench", *common, "--pg-url", reachable, "--json")
    assert result.exit_code == 0, result.output
    assert_no_secret(result)
    assert argv and not any(SECRET in arg for cmd in argv for arg in cmd)  # ps shows argv
    failed = invoke("bench", *common, "--pg-url", UNREACHABLE)
    assert failed.exit_code == 1
    assert_no_secret(failed)
    assert failed.stderr.startswith(f"Error: PostgreSQL is not reachable at {MASKED}: ")

"""Where the steps write: a SQLite file in a temporary directory, or a fresh PostgreSQL
schema (``bench_<random>``, reached through ``options=-csearch_path=...`` in the URL and
dropped afterwards). Also the on-disk size of what a step wrote."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from clusterstore.eventstore.config import resolve_url
from clusterstore.eventstore.errors import ConfigurationError
from clusterstore.eventstore.recorder import masked_url

PG_ENV = "CLUSTERSTORE_BENCH_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def pg_base_url(value: str | None = None) -> URL:
    """The PostgreSQL database to make scratch schemas in (``--pg-url``, then
    ``$CLUSTERSTORE_BENCH_PG_URL``): parsed and checked as ``--db`` is, so a URL that is
    not PostgreSQL's or cannot be parsed is one ``ConfigurationError`` (password masked)."""
    text = value or os.environ.get(PG_ENV) or PG_DEFAULT
    if not text.lower().startswith("postgresql"):
        raise ConfigurationError(
            "the benchmark's PostgreSQL URL must be postgresql://USER@HOST/DATABASE "
            "(--pg-url or $" + PG_ENV + ")"
        )
    return resolve_url(text)


def libpq_dsn(db_url: str) -> str:
    """The libpq form (``postgresql://...``) of a SQLAlchemy URL, for raw psycopg."""
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _connect(url: URL) -> Any:
    import psycopg

    return psycopg.connect(libpq_dsn(url.render_as_string(hide_password=False)), autocommit=True)


def pg_check(base: URL) -> str | None:
    """None when the server answers, else why not (one line)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg 3 is not installed (pip install 'clusterstore[postgres]')"
    try:
        with psycopg.connect(
            libpq_dsn(base.render_as_string(hide_password=False)), connect_timeout=5
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"PostgreSQL is not reachable at {masked_url(base)}: {first}"
    return None


def pg_server_version(base: URL) -> str:
    with _connect(base) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


def create_pg_schema(base: URL) -> tuple[str, str]:
    """A new empty schema; returns (URL whose search_path is that schema, schema name)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with _connect(base) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    url = base.update_query_dict({"options": f"-csearch_path={name}"})
    return url.render_as_string(hide_password=False), name


def drop_pg_schema(base: URL, name: str) -> None:
    with _connect(base) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def db_bytes(backend: str, db_url: str) -> int:
    """Bytes on disk: the SQLite file plus its WAL (after a checkpoint, so the figure does
    not depend on when SQLite last checkpointed), or on PostgreSQL the sum of
    ``pg_total_relation_size`` (heap, indexes, TOAST) over the schema's tables."""
    if backend == "sqlite":
        with sqlite3.connect(db_url) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        files = [Path(db_url), Path(db_url + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())
    with _connect(make_url(db_url)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace s ON s.oid = c.relnamespace "
            "WHERE s.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')"
        ).fetchone()
        return int(row[0])


def remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)

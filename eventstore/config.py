"""Where the store lives: a SQLAlchemy URL or a plain SQLite file path.

Resolution order: the explicit value (``--db``), then ``$CLUSTERSTORE_DB``, then
``./clusterstore.db``. ``postgresql://`` URLs use psycopg 3. A path is checked before any
connection is made, so a directory or a file that is not a SQLite database gets a clear
error and is never opened for writing (unless this process has the file open as a store
already: reading its header then would drop SQLite's locks on it).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigurationError, NotADatabaseError
from .recorder import Recorder

ENV_VAR = "CLUSTERSTORE_DB"
DEFAULT_DB = "clusterstore.db"
SQLITE_HEADER = b"SQLite format 3\x00"


def resolve_url(db: str | os.PathLike[str] | None = None) -> URL:
    """The SQLAlchemy URL for ``db`` (see module docstring)."""
    value = os.fspath(db) if db is not None else os.environ.get(ENV_VAR) or DEFAULT_DB
    if not value.strip():
        raise ConfigurationError("the database location is empty; give --db PATH or URL")
    if "://" not in value:
        return _sqlite_path_url(Path(value))
    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number
        raise ConfigurationError(f"cannot parse the database URL {_mask(value)}: {e}") from e
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.get_driver_name() not in ("psycopg", ""):
            raise ConfigurationError(
                f"{url.render_as_string(hide_password=True)}: only the psycopg (3) driver is "
                "supported; use postgresql+psycopg://..."
            )
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigurationError(
                "an in-memory SQLite database cannot hold a store; give a file path"
            )
        return _sqlite_path_url(Path(url.database))
    raise ConfigurationError(
        f"unsupported database {url.render_as_string(hide_password=True)}: clusterstore "
        "runs on SQLite (a file path) and PostgreSQL (postgresql://...)"
    )


def _mask(value: str) -> str:
    try:
        return make_url(value).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def _open_here(path: Path) -> bool:
    """True if this process already has ``path`` open as a store: it was checked then, and
    opening it again here to read its header would drop SQLite's locks (see ``sqlite``)."""
    from .sqlite import file_in_use

    return file_in_use(path)


def _sqlite_path_url(path: Path) -> URL:
    path = path.expanduser()
    if path.is_dir():
        raise ConfigurationError(f"{path} is a directory; give the path of a database file")
    if path.exists() and not _open_here(path):
        try:
            with path.open("rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except PermissionError as e:
            raise ConfigurationError(f"{path} cannot be read: permission denied") from e
        if header and header != SQLITE_HEADER:
            raise NotADatabaseError(f"{path} is not a SQLite database; it was left untouched")
    elif not path.parent.exists():
        raise ConfigurationError(
            f"cannot create {path}: the directory {path.parent} does not exist"
        )
    return URL.create("sqlite+pysqlite", database=str(path))


def make_recorder(url: URL) -> Recorder:
    """The recorder for the URL's backend."""
    if url.get_backend_name() == "sqlite":
        from .sqlite import SQLiteRecorder

        return SQLiteRecorder(url)
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise ConfigurationError(
            "PostgreSQL support needs psycopg 3: pip install 'clusterstore[postgres]'"
        ) from e
    from .postgres import PostgresRecorder

    return PostgresRecorder(url)

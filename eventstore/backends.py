"""Which backend serves a database: the one registry of backends, chosen by configuration.

A URL's scheme (SQLAlchemy's backend name: ``sqlite``, ``postgresql``) names an entry of
``BACKENDS``: the module and ``Recorder`` subclass that hold everything that differs between
databases (URL checks, engine set-up, the fast insert paths, locks, waiting for commits,
error classification). A plain path (no ``://``) is a file of ``PATH_BACKEND``. A scheme
that is not registered is a ``ConfigurationError``; nothing falls back to another backend.

Adding a backend: one module beside ``sqlite.py``/``postgres.py`` with a ``Recorder``
subclass, one line here, and one entry in ``tests/conftest.py``'s ``BACKENDS`` (README,
"Adding a backend").
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from sqlalchemy.engine import URL

from .errors import ConfigurationError
from .recorder import Recorder, masked_url


class Backend(NamedTuple):
    target: str  # "module:Class" of the Recorder subclass
    label: str  # the database's name in messages
    driver: str = ""  # the driver package a missing import names, e.g. "psycopg 3"
    extra: str = ""  # the pip extra that installs it

    def load(self) -> type[Recorder]:
        module, _, name = self.target.partition(":")
        try:
            cls: type[Recorder] = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise ConfigurationError(
                f"{self.label} support needs {self.driver or e.name}: "
                f"pip install 'clusterstore[{self.extra or self.label.lower()}]'"
            ) from e
        return cls


_POSTGRES = Backend(
    "clusterstore.eventstore.postgres:PostgresRecorder", "PostgreSQL", "psycopg 3", "postgres"
)

BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("clusterstore.eventstore.sqlite:SQLiteRecorder", "SQLite"),
    "postgresql": _POSTGRES,
    "postgres": _POSTGRES,
}
PATH_BACKEND = "sqlite"  # a location without "://" is a file of this backend


def backend_for(url: URL) -> type[Recorder]:
    """The recorder class registered for the URL's scheme."""
    entry = BACKENDS.get(url.get_backend_name())
    if entry is None:
        raise ConfigurationError(
            f"unsupported database {masked_url(url)}: clusterstore "
            "runs on SQLite (a file path) and PostgreSQL (postgresql://...)"
        )
    return entry.load()


def path_backend() -> type[Recorder]:
    """The recorder class for a plain file path."""
    return BACKENDS[PATH_BACKEND].load()

"""Where the store lives: a SQLAlchemy URL or a plain file path (a SQLite database).

Resolution order: the explicit value (``--db``), then ``$CLUSTERSTORE_DB``, then
``./clusterstore.db``. The URL's scheme chooses the backend (``backends.BACKENDS``), which
checks and normalises the URL: ``postgresql://`` URLs use psycopg 3; a SQLite path is
checked before any connection is made, so a directory or a file that is not a SQLite
database gets a clear error and is never opened for writing (see ``sqlite``).
"""

from __future__ import annotations

import os
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .backends import backend_for, path_backend
from .errors import ConfigurationError
from .recorder import Recorder
from .text import not_utf8
from .waiting import WaitNotifier

ENV_VAR = "CLUSTERSTORE_DB"
DEFAULT_DB = "clusterstore.db"


def resolve_url(db: str | os.PathLike[str] | None = None) -> URL:
    """The SQLAlchemy URL for ``db`` (see module docstring)."""
    value = os.fspath(db) if db is not None else os.environ.get(ENV_VAR) or DEFAULT_DB
    if not value.strip():
        raise ConfigurationError("the database location is empty; give --db PATH or URL")
    if "://" not in value:
        return path_backend().url_for_path(value)
    value = _encode_password(value)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number
        # neither the URL nor the parser's message (which quotes it) is shown past the user
        raise ConfigurationError(
            f"cannot parse the database URL {_up_to_user(value)} (check its port and "
            "percent-encode special characters of the password)"
        ) from e
    byte = not_utf8(value)
    if byte is not None and not url.drivername.startswith("sqlite"):  # a path may be bytes
        shown = _up_to_user(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise ConfigurationError(
            f"the database URL {shown} holds the byte 0x{byte:02X}, which is not UTF-8; a "
            "server's user, password, host and database names must be UTF-8 text"
        )
    return backend_for(url).check_url(url)


def _encode_password(value: str) -> str:
    """``value`` with a password that holds a raw ``@`` percent-encoded: the user info is
    everything up to the last ``@`` (URL parsers split at the first one, and would take
    the password's tail for the host, and print it)."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or "@" not in userinfo or ":" not in userinfo:
        return value
    user, _, password = userinfo.partition(":")
    return f"{scheme}{sep}{user}:{quote(password, safe='')}@{host}"


def _up_to_user(value: str) -> str:
    """The URL's scheme and user name only, the password masked: ``scheme://user:***@...``."""
    scheme, _, rest = value.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if not at:
        return f"{scheme}://..."
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@..."


def make_recorder(
    url: URL,
    *,
    read_only: bool = False,
    lock_wait: float | None = None,
    on_wait: WaitNotifier | None = None,
) -> Recorder:
    """The recorder for the URL's backend (a URL from ``resolve_url``); ``read_only``: one
    that can only read (see ``Recorder.check_store``); ``lock_wait``, ``on_wait``: how long
    a lock held by another process is waited for (default ``$CLUSTERSTORE_LOCK_WAIT``, else
    60 s) and who is told while it lasts (``waiting``)."""
    return backend_for(url)(url, read_only=read_only, lock_wait=lock_wait, on_wait=on_wait)

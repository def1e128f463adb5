"""What a driver error means, and the clusterstore exception it becomes.

A backend's ``classify_error`` says what an error means from the driver's exception class
and code (SQLite result codes, PostgreSQL SQLSTATE), never from its message text;
``convert_error`` turns that into the exception users see. Called from one place,
``Recorder.transaction`` (and ``Recorder.connection``).
"""

from __future__ import annotations

from enum import Enum, auto

from sqlalchemy import exc as sa_exc

from .errors import (
    DatabaseBusyError,
    DatabaseUnavailableError,
    DiskFullError,
    EventStoreError,
    ImmutableLogError,
    NotADatabaseError,
    ReadOnlyDatabaseError,
    StatementCanceledError,
)


class DuplicateKeyError(EventStoreError):
    """A concurrent writer took the same key first (an append is then re-decided)."""


class DriverError(Enum):
    """What a driver error means, as a backend's ``classify_error`` tells it."""

    IMMUTABLE = auto()  # the append-only triggers refused a change of the log
    DUPLICATE_KEY = auto()  # a unique or primary key was taken (by a concurrent writer)
    BUSY = auto()  # locked by another writer (or a lock wait timed out)
    READ_ONLY = auto()  # the database or transaction cannot be written
    NOT_A_DATABASE = auto()  # the file is not a database of this backend
    CANNOT_OPEN = auto()  # the database file (or its directory) cannot be opened
    UNAVAILABLE = auto()  # the connection failed or the server went away
    DISK_FULL = auto()  # the database could not grow (disk, file system or quota full)
    CANCELED = auto()  # the server cancelled the statement (statement_timeout, a cancel)


def convert_error(e: sa_exc.DBAPIError, kind: DriverError | None, where: str) -> Exception:
    """The clusterstore exception for the driver error ``e`` at the database ``where``."""
    msg = str(e.orig) if e.orig is not None else str(e)
    first = msg.strip().splitlines()[0] if msg.strip() else type(e.orig or e).__name__
    match kind:
        case DriverError.IMMUTABLE:
            return ImmutableLogError(first)
        case DriverError.DUPLICATE_KEY:
            return DuplicateKeyError(msg)
        case DriverError.BUSY:
            return DatabaseBusyError(f"{where}: the database is locked by another writer")
        case DriverError.READ_ONLY:
            return ReadOnlyDatabaseError(f"{where}: the database is read-only ({msg.strip()})")
        case DriverError.NOT_A_DATABASE:
            return NotADatabaseError(f"{where} is not a SQLite database")
        case DriverError.CANNOT_OPEN:
            return ReadOnlyDatabaseError(
                f"{where}: unable to open the database file; SQLite must be able to write "
                "the file and its directory (for the -wal and -shm files)"
            )
        case DriverError.UNAVAILABLE:
            return DatabaseUnavailableError(f"cannot use the database at {where}: {first}")
        case DriverError.DISK_FULL:
            return DiskFullError(where, first)
        case DriverError.CANCELED:
            return StatementCanceledError(
                f"{where}: the server cancelled the statement ({first}); a statement_timeout "
                "or lock_timeout set for this role or database, or a cancel request; "
                "nothing of this transaction was written"
            )
    if e.connection_invalidated or isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError):
        return DatabaseUnavailableError(f"cannot use the database at {where}: {first}")
    return EventStoreError(f"database error at {where}: {first}")

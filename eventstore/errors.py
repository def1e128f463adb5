"""The exceptions clusterstore raises.

Every expected failure is an ``EventStoreError``; callers never see SQLAlchemy or
driver exceptions (they are converted in ``recorder.Recorder.transaction``).

    EventStoreError
    ├── ConfigurationError (ValueError)      bad --db value, unusable file
    │   ├── NotADatabaseError                the file is not a SQLite database
    │   ├── ForeignDatabaseError             a database that holds tables of another app
    │   ├── NoStoreError                     a read found no store there (nothing created)
    │   ├── NoDirectoryError                 a SQLite path in a directory that does not exist
    │   ├── NoSuchDatabaseError              the server has no database of the URL's name
    │   ├── PartitioningError                partitions refused (range, backend, existing store)
    │   └── OutputFileError                  an output path that cannot be written safely
    ├── DatabaseUnavailableError             cannot connect, or the server went away
    ├── DatabaseBusyError                    still locked by another writer after retries
    ├── DiskFullError                        the database's disk (or quota) is full
    ├── StatementCanceledError               the server cancelled a statement (timeout, admin)
    ├── ReadOnlyDatabaseError                the database cannot be written
    ├── SchemaError                          the store's schema is missing or too new
    ├── ConcurrencyError                     the run's head is not where the writer expected
    │   └── EventConflictError               a (run, seq) is stored with different bytes
    │       └── ConcurrentWriterError            another process appended to the run meanwhile
    ├── ImmutableLogError                    something tried to change or delete the log
    ├── IncompleteRunError                   the run is not completed (export refuses it)
    ├── RunNotFoundError (LookupError)       no run has that id or prefix
    ├── AmbiguousRunError (LookupError)      a prefix names several runs
    ├── ClusterNotFoundError (LookupError)   a run has no cluster with that number
    ├── EventDecodeError (ValueError)        stored bytes that cannot be decoded
    │   ├── UnknownEventTypeError            a type this code does not know
    │   ├── FutureEventVersionError          a schema version newer than this code
    │   └── UnstorableEventError             decodes, but holds a value no read model can hold
    └── InputError (ValueError)              bad input to a run (shapes, ids, NaN, k)
        └── LegacyRowError                   a legacy row that cannot be imported

Beside the tree: ``RunInterrupted`` (a ``KeyboardInterrupt``) says which run Ctrl-C
stopped, after its writer recorded RunFailed, so the CLI can say how to resume it.
"""

from __future__ import annotations

from uuid import UUID


class EventStoreError(Exception):
    """Root of every error clusterstore raises on purpose."""


class ConfigurationError(EventStoreError, ValueError):
    """The database location or an option cannot be used."""


class NotADatabaseError(ConfigurationError):
    """The path exists but is not a SQLite database."""


class ForeignDatabaseError(ConfigurationError):
    """The database holds tables that clusterstore does not own."""


class NoStoreError(ConfigurationError):
    """A command that only reads found no store at the location; nothing was created."""

    def __init__(self, where: str):
        self.where = where
        super().__init__(
            f"no clusterstore database at {where}; nothing was created "
            "(`clusterstore init` creates one)"
        )


class NoDirectoryError(ConfigurationError):
    """A SQLite path whose directory does not exist: a store cannot be created there (a
    command that only reads turns it into ``NoStoreError``)."""

    def __init__(self, path: str, directory: str):
        self.path = path
        super().__init__(f"cannot create {path}: the directory {directory} does not exist")


class NoSuchDatabaseError(ConfigurationError):
    """The server answers, but has no database of the name the URL gives."""


class PartitioningError(ConfigurationError):
    """``--partitions`` cannot be used: out of range, a backend that does not partition,
    or a store that already exists with another layout (nothing was changed)."""


class OutputFileError(ConfigurationError):
    """An output path is refused (it exists, is not a regular file, is one of the store's
    own files, or its name and the format disagree) or cannot be written."""


class DatabaseUnavailableError(EventStoreError):
    """The database cannot be reached (refused connection, server restart, lost socket)."""


class DatabaseBusyError(EventStoreError):
    """Another writer held the database for longer than the store is willing to wait."""


class DiskFullError(EventStoreError):
    """The database could not grow: its disk, file system or quota is full (SQLITE_FULL,
    PostgreSQL's disk_full). What was committed before stays; the failed transaction is
    rolled back. ``where``: the database; ``detail``: the driver's first line.
    ``stopping(run_id, then)``: the same error as it stopped a run's writer, saying how
    the run is continued once there is space."""

    def __init__(self, where: str, detail: str, *, run_id: UUID | None = None, then: str = ""):
        self.where = where
        self.detail = detail
        self.run_id = run_id
        kept = (
            "what was committed before is kept, this transaction was rolled back"
            if run_id is None
            else f"run {run_id} is stored up to its last complete batch"
        )
        super().__init__(
            f"{where}: the database's disk is full ({detail}); {kept}; free some space, then "
            f"{then or 'retry'}"
        )

    def stopping(self, run_id: UUID, then: str) -> DiskFullError:
        return DiskFullError(self.where, self.detail, run_id=run_id, then=then)


class StatementCanceledError(EventStoreError):
    """The server cancelled a statement: ``statement_timeout``, a cancel request
    (``pg_cancel_backend``, Ctrl-C in another client) or a lock wait that gave up."""


class ReadOnlyDatabaseError(EventStoreError):
    """The database (or its directory) cannot be written."""


class SchemaError(EventStoreError):
    """The store's tables are missing, damaged, or from a newer clusterstore."""


class ConcurrencyError(EventStoreError):
    """An append expected the run's head at one sequence and found it at another."""

    def __init__(self, run_id: UUID, expected: int, actual: int, message: str | None = None):
        self.run_id = run_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            message
            or f"run {run_id}: expected the head at seq {expected}, but it is at seq {actual}; "
            "read the run's head and retry from there"
        )


class EventConflictError(ConcurrencyError):
    """The same (run, seq) is already stored with different bytes: never silently ignored."""

    def __init__(self, run_id: UUID, seq: int, expected: int, actual: int):
        self.seq = seq
        super().__init__(
            run_id,
            expected,
            actual,
            f"run {run_id}: seq {seq} is already stored with different content "
            f"(expected head {expected}, actual head {actual}); the log is append-only, "
            "so a conflicting re-send is refused",
        )


class ConcurrentWriterError(EventConflictError):
    """A run's writer found events after its head that another process appended meanwhile
    (e.g. two ``runs resume`` of one run: the loser finds the winner's RunResumed). Nothing
    of this writer's append was stored; the other process carries the run on."""

    def __init__(self, run_id: UUID, seq: int, expected: int, actual: int):
        self.seq = seq
        ConcurrencyError.__init__(
            self,
            run_id,
            expected,
            actual,
            f"run {run_id}: another process is resuming this run (it appended seq {seq} "
            "after this process read the run); this process stopped and stored nothing more "
            f"(`clusterstore runs show {run_id}` shows the run's progress)",
        )


class ImmutableLogError(EventStoreError):
    """The database refused an UPDATE, DELETE or TRUNCATE of the append-only log."""


class IncompleteRunError(EventStoreError):
    """The run is not completed (running, failed or interrupted) and the caller asked for
    a completed one."""

    def __init__(self, run_id: UUID, status: str, assignments: int, message: str):
        self.run_id = run_id
        self.status = status
        self.assignments = assignments
        super().__init__(message)


class RunNotFoundError(EventStoreError, LookupError):
    """No run matches the id or prefix."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousRunError(EventStoreError, LookupError):
    """A run-id prefix matches more than one run."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ClusterNotFoundError(EventStoreError, LookupError):
    """The run has no cluster with that number."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EventDecodeError(EventStoreError, ValueError):
    """A stored event's bytes cannot be decoded; names the run and seq."""

    def __init__(self, run_id: UUID | None, seq: int | None, reason: str):
        self.run_id = run_id
        self.seq = seq
        self.reason = reason
        where = f"run {run_id} seq {seq}" if run_id is not None else "event"
        super().__init__(f"{where}: {reason}")


class UnknownEventTypeError(EventDecodeError):
    """The stored type code is not one this version of clusterstore knows."""


class FutureEventVersionError(EventDecodeError):
    """The stored schema version is newer than this code can read."""


class UnstorableEventError(EventDecodeError):
    """An event that decodes but holds a value the read models cannot store (a NUL
    character in a text column, an integer beyond its column's range); names the run and
    seq. A projection meets it as it meets bytes that do not decode: it skips the run from
    there on (``projections.dead_letter``) instead of stopping for every run."""


class InputError(EventStoreError, ValueError):
    """Input to a run is unusable; raised before anything is written."""


class LegacyRowError(InputError):
    """A row of a legacy database cannot be imported (a NULL or non-UUID id, a date that
    does not parse); names the table, the row and the column. Raised before anything of
    the row's legacy result is written."""

    def __init__(self, table: str, row: str, column: str, problem: str, consequence: str):
        self.table = table
        self.row = row
        self.column = column
        super().__init__(
            f"legacy table {table}, {row}: column {column} {problem}; {consequence}; "
            "correct (or delete) the row and run the import again"
        )


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped a run's writer; RunFailed was recorded. ``then``: how the
    run goes on (``RunWriter.continued_by``). Still a ``KeyboardInterrupt``, so code that
    stops on Ctrl-C keeps stopping."""

    def __init__(self, run_id: UUID, then: str | None = None):
        self.run_id = run_id
        then = f"`clusterstore runs resume {run_id}` continues it" if then is None else then
        super().__init__(
            f"interrupted (Ctrl-C): run {run_id} is stored up to its last complete batch and "
            f"marked failed; {then}"
        )

    def __str__(self) -> str:
        return str(self.args[0])

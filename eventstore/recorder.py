"""The recorder: a small interface over the log tables, with the code both backends share.

Backends (``sqlite.py``, ``postgres.py``, registered in ``backends``) only hold what
differs: URL checks, engine set-up, how a write transaction starts, the fast insert paths
(the log's and the read models'), how a commit position is allocated, the immutability
triggers, locks, waiting for commits, and which driver errors mean what
(``classify_error``: by exception class and code, never by message text). Driver errors are
converted to ``errors`` in exactly one place, ``Recorder.transaction`` (``driver_errors``).
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar
from uuid import UUID

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    Select,
    and_,
    cast,
    exists,
    func,
    inspect,
    select,
    union_all,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL

from . import schema, waiting
from .capabilities import BackendCapabilities
from .codec import Batch, batch_len, batch_payloads, batch_slice
from .driver_errors import DriverError, DuplicateKeyError, convert_error
from .errors import (
    ConcurrencyError,
    ConfigurationError,
    DatabaseBusyError,
    EventConflictError,
    ForeignDatabaseError,
    NoStoreError,
    PartitioningError,
    SchemaError,
)
from .schema import utc as _utc

PAGE_SIZE = 10_000


def _unregistered_runs() -> Select[Any]:
    """(run_id, first commit time) of the runs in ``cs_commits`` without a ``cs_runs`` row."""
    c, r = schema.commits, schema.runs
    return (
        select(c.c.run_id, func.min(c.c.committed_at).label("created_at"))
        .where(~exists().where(r.c.run_id == c.c.run_id))
        .group_by(c.c.run_id)
    )


APPEND_RETRIES = 8
# what a writer waits for (``Recorder.waiting_for_lock``), as the notice names it
WAITING_FOR_WRITE = "another writer to release the database lock"
WAITING_FOR_RUN = "another writer of this run to commit"
WAITING_FOR_LOG = "another writer to commit its position in the log"
# the tables whose presence says whether (and how completely) a store is here
_KNOWN_TABLES = schema.STORE_TABLES | schema.ADDED_TABLES


class StoredEvent(NamedTuple):
    run_id: UUID
    seq: int
    type: int
    version: int
    payload: bytes
    position: int | None = None  # global position; set by the feed reads


class Commit(NamedTuple):
    """One append transaction: events ``first_seq .. first_seq + count - 1`` of a run,
    at global positions ``position .. position + count - 1``."""

    position: int
    run_id: UUID
    first_seq: int
    count: int  # type: ignore[assignment]  # the field shadows tuple.count
    committed_at: datetime

    @property
    def last_position(self) -> int:
        return self.position + self.count - 1

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


_SECRET_QUERY = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def masked_url(url: URL) -> str:
    """``url`` as users may see it: the password masked, in the user info and in the query
    (``?password=``, ``?sslpassword=``) alike."""
    return _SECRET_QUERY.sub(r"\1***", url.render_as_string(hide_password=True))


class RunHead(NamedTuple):
    run_id: UUID
    created_at: datetime
    head: int


class AppendResult(NamedTuple):
    run_id: UUID
    head: int  # the run's head after the call
    appended: int  # events newly written (0 for a pure idempotent re-send)
    first_seq: int  # seq of the batch's first event
    position: int | None  # global position of the first newly written event


_T = TypeVar("_T")


def retrying(
    attempt: Callable[[], _T],
    retry_on: tuple[type[BaseException], ...],
    exhausted: Callable[[BaseException], BaseException],
    *,
    bound: float | None = None,
) -> _T:
    """``attempt()``, retried with jittered exponential backoff while it raises one of
    ``retry_on``; then ``exhausted(last error)`` is raised. With ``bound`` (the lock wait,
    ``waiting``), every try shares one deadline ``bound`` seconds away: a
    ``DatabaseBusyError`` is retried until it passes, and the driver's own wait inside a try
    is cut to what is left of it; other errors, and every error without ``bound``, are
    tried ``APPEND_RETRIES`` times."""
    with waiting.deadline(bound) if bound is not None else nullcontext():
        delay = 0.05
        tries = 0
        while True:
            try:
                return attempt()
            except retry_on as e:
                tries += 1
                busy = bound is not None and isinstance(e, DatabaseBusyError)
                if waiting.expired() if busy else tries >= APPEND_RETRIES:
                    error = exhausted(e)
                    if error is e:
                        raise
                    raise error from None
                time.sleep(min(delay * (1 + random.random()), waiting.remaining(2.0)))
                delay = min(delay * 2, 2.0)


class Recorder(BackendCapabilities):
    """The log's storage interface. One instance per database URL; thread-safe through
    SQLAlchemy's pool."""

    dialect_name: ClassVar[str]  # for display (``EventStore.backend``); never branched on
    # SQL aggregate over ``e.payload`` concatenating a commit's payloads in seq order (feed.py)
    concat_payloads_sql: ClassVar[str]
    # Optional, for the feed: the same payloads concatenated in whatever order the scan
    # delivers them, each followed by its seq's offset from the commit's first seq
    # (``e.seq - c.first_seq``, 4 bytes big-endian); the feed then puts the records in seq
    # order itself (feed.py). None: ``concat_payloads_sql``.
    concat_payloads_with_offsets_sql: ClassVar[str | None] = None
    # Optional, for a run's block reads (log_reads.py): the payloads concatenated in
    # whatever order the scan delivers them, each followed by its seq (``e.seq``, 8 bytes
    # big-endian), put in seq order by the reader. None: ``concat_payloads_sql``.
    concat_payloads_with_seqs_sql: ClassVar[str | None] = None
    # Optional, for point reads by key (log_reads.py): a SELECT of (run_id, seq, type,
    # version, payload) of the events at the keys given as two arrays ``:runs``, ``:seqs``.
    # None: the keys as a VALUES table (two bound parameters per key).
    events_at_sql: ClassVar[str | None] = None
    # ``e.payload`` as the bytes it holds (feed.py)
    payload_sql: ClassVar[str] = "e.payload"
    # whether ``try_session_lock`` and friends exist (a lock held by a connection, freed by
    # the server when it ends); without them the projection runner keeps a lock row
    has_session_locks: ClassVar[bool] = False
    # whether ``initialise(partitions=N)`` can partition the store by run
    supports_partitions: ClassVar[bool] = False

    def __init__(
        self,
        url: URL,
        *,
        read_only: bool = False,
        lock_wait: float | None = None,
        on_wait: waiting.WaitNotifier | None = None,
    ):
        self.url = url
        # read_only: the engine can only read (a command that must never write); the
        # store must exist already (``check_store``)
        self.read_only = read_only
        # how long a lock held by another process is waited for, and who is told meanwhile
        # (``waiting``); the engine's driver timeouts are set from it
        self.lock_wait = waiting.lock_wait_seconds(lock_wait)
        self.on_wait = on_wait
        self.engine = self._create_engine(url)

    @abstractmethod
    def _create_engine(self, url: URL) -> Engine:
        """The engine for ``url``, set up for this database (pragmas, timeouts)."""

    @property
    def display_url(self) -> str:
        """The URL with any password masked: the only form ever printed."""
        return masked_url(self.url)

    def local_files(self) -> list[Path]:
        """The files on this machine that hold the store (none for a server database)."""
        return []

    # ------------------------------------------------------------------ URLs

    @classmethod
    @abstractmethod
    def check_url(cls, url: URL) -> URL:
        """``url`` checked and normalised for this backend (e.g. the driver it needs);
        ``ConfigurationError`` if it cannot hold a store."""

    @classmethod
    def url_for_path(cls, path: str) -> URL:
        """The URL of a plain path (only the backend registered as ``PATH_BACKEND``)."""
        raise ConfigurationError(f"{path}: give a URL for {cls.dialect_name}")

    @classmethod
    def display_of(cls, url: URL) -> str:
        """How ``url`` is shown to users (the password masked)."""
        return masked_url(url)

    @classmethod
    @abstractmethod
    def read_only_engine(cls, url: URL) -> Engine:
        """An engine that can only read the database at ``url`` (legacy import sources)."""

    def lock_setup(self, conn: Connection) -> None:
        """Serialise one-time CREATE TABLEs (e.g. of the read models) until the transaction
        ends."""
        self._lock_schema(conn)

    # ------------------------------------------------------------------ backend hooks

    @abstractmethod
    def classify_error(self, e: sa_exc.DBAPIError) -> DriverError | None:
        """What the driver error means (by its class and code), or None if nothing known."""

    def _relax_commit(self, conn: Connection) -> None:
        """Let this write transaction commit without waiting for durability (if the
        database offers that); see ``transaction(synchronous_commit=False)``."""

    @abstractmethod
    def _begin_write(self, conn: Connection) -> None:
        """Start a write transaction (SQLite: BEGIN IMMEDIATE)."""

    @abstractmethod
    def _begin_read(self, conn: Connection) -> None:
        """Start a read transaction."""

    @abstractmethod
    def _lock_run(self, conn: Connection, run_id: UUID) -> None:
        """Make sure the run's ``cs_runs`` row exists and serialise appends to the run until
        the transaction ends."""

    @abstractmethod
    def _insert_events(self, conn: Connection, run_id: UUID, first_seq: int, batch: Batch) -> None:
        """Insert the batch at seqs first_seq, first_seq + 1, ... (the fast path)."""

    @abstractmethod
    def _allocate_position(self, conn: Connection) -> int:
        """The next global position, allocated so that commits become visible in order."""

    @abstractmethod
    def _after_append(self, conn: Connection, position: int) -> None:
        """Hook run inside the append transaction after the commit row is written."""

    def _immutability_ddl(self) -> list[str]:
        """Statements that make the log tables reject UPDATE, DELETE (and TRUNCATE)."""
        return [*self._immutability_setup(), *self._immutability_triggers().values()]

    def _immutability_setup(self) -> list[str]:
        """What the triggers need first (e.g. a function); safe to run again."""
        return []

    @abstractmethod
    def _immutability_triggers(self) -> dict[str, str]:
        """The append-only triggers of the log tables: name -> CREATE statement."""

    @abstractmethod
    def _existing_triggers(self, conn: Connection) -> set[str]:
        """The names of the triggers the store's database (or schema) holds."""

    def missing_triggers(self) -> list[str]:
        """The append-only triggers of the log that are missing (dropped around the store)."""
        with self.transaction() as conn:
            have = self._existing_triggers(conn)
        return sorted(set(self._immutability_triggers()) - have)

    def restore_triggers(self) -> list[str]:
        """Create the missing append-only triggers again; returns their names."""
        with self.transaction(write=True) as conn:
            self._lock_schema(conn)
            missing = sorted(set(self._immutability_triggers()) - self._existing_triggers(conn))
            if missing:
                for ddl in self._immutability_setup():
                    conn.exec_driver_sql(ddl)
                for name in missing:
                    conn.exec_driver_sql(self._immutability_triggers()[name])
        return missing

    @abstractmethod
    def _init_storage(self, conn: Connection) -> None:
        """One-time storage settings (e.g. SQLite WAL); runs only on our own database."""

    @abstractmethod
    def _lock_schema(self, conn: Connection) -> None:
        """Serialise concurrent ``initialise`` calls on one database until the transaction
        ends."""

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(
        self,
        *,
        write: bool = False,
        conn: Connection | None = None,
        synchronous_commit: bool = True,
    ) -> Iterator[Connection]:
        """A transaction; every driver error raised inside becomes an ``EventStoreError``.
        ``conn``: run it on a connection held by the caller (see ``connection``).
        ``synchronous_commit=False`` (a write whose loss in a server crash is harmless, e.g.
        a projection batch with its checkpoint): commit without waiting for the WAL flush
        where the database allows it."""
        try:
            if conn is not None:
                yield from self._transaction_on(conn, write, synchronous_commit)
                return
            with self.engine.connect() as fresh:
                yield from self._transaction_on(fresh, write, synchronous_commit)
        except sa_exc.DBAPIError as e:
            raise self._convert(e) from e

    def _transaction_on(
        self, conn: Connection, write: bool, synchronous_commit: bool = True
    ) -> Iterator[Connection]:
        (self._begin_write if write else self._begin_read)(conn)
        if write and not synchronous_commit:
            self._relax_commit(conn)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.commit()
        except BaseException:
            # A failed COMMIT (a full disk, a deferred check) leaves the connection needing
            # a rollback: without it, the next transaction on it (a projection runner
            # releasing its lock) fails with PendingRollbackError instead of this error.
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection held across several ``transaction(conn=...)`` calls, e.g. by a
        projection runner that keeps a session-level lock; driver errors are converted."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa_exc.DBAPIError as e:
            raise self._convert(e) from e

    def fetch_all(self, conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
        """All rows of a read-only ``sql`` with ``:name`` parameters, on ``conn`` (inside a
        ``transaction``). PostgreSQL fetches them in binary: a bytea result crosses the wire
        as its bytes instead of hex text (the bulk feed reads, ``feed.py``)."""
        return list(conn.execute(sql_text(sql), params).all())

    def _convert(self, e: sa_exc.DBAPIError) -> Exception:
        kind = self.classify_error(e)
        if kind is DriverError.BUSY:
            return DatabaseBusyError(f"{self.display_url}: {self.busy_reason()}")
        return convert_error(e, kind, self.display_url)

    def busy_reason(self, *, retried: bool = False) -> str:
        """Why a write gave up waiting for a lock, naming the wait that applied and how to
        change it (``waiting.busy_reason``)."""
        return waiting.busy_reason(self.lock_wait, self.url_lock_timeout(), retried=retried)

    def url_lock_timeout(self) -> float | None:
        """The lock timeout (seconds) the database URL sets for this store's sessions in
        place of the lock wait, or None if the lock wait applies."""
        return None

    @contextmanager
    def waiting_for_lock(self, what: str) -> Iterator[None]:
        """Around a statement that may wait for another writer's lock: announced to
        ``on_wait`` while it waits (``waiting.announced``)."""
        with waiting.announced(self.on_wait, what, self._gives_up_after):
            yield

    def _gives_up_after(self) -> float:
        """When a retried write behind a lock gives up: the lock wait, or a longer lock
        timeout of the URL (one try lasts that long)."""
        url_wait = self.url_lock_timeout()
        return self.lock_wait if url_wait is None else max(self.lock_wait, url_wait)

    # ------------------------------------------------------------------ schema

    def initialise(self, *, allow_existing: bool = False, partitions: int | None = None) -> bool:
        """Create the store's tables if they are missing. Returns True if it created them.

        A database that already holds tables but no ``cs_meta`` belongs to someone else and
        is refused unless ``allow_existing``; tables the store does not own are never touched.
        Safe to call from several processes at once: a lost race is retried (SQLite refuses
        a concurrent switch to WAL with "database is locked" without waiting).

        ``partitions``: the store is partitioned by run into that many partitions (backends
        with ``supports_partitions``); an existing store must already be, else
        ``PartitioningError`` before anything is written.
        """
        if partitions is not None:
            self._check_partitions_wanted(partitions)
        return retrying(
            lambda: self._initialise_once(allow_existing, partitions),
            (DatabaseBusyError,),
            lambda e: DatabaseBusyError(f"{self.display_url}: {self.busy_reason(retried=True)}"),
            bound=self.lock_wait,
        )

    def _check_partitions_wanted(self, partitions: int) -> None:
        if not schema.MIN_PARTITIONS <= partitions <= schema.MAX_PARTITIONS:
            raise PartitioningError(
                f"--partitions {partitions} is out of range: give {schema.MIN_PARTITIONS} "
                f"to {schema.MAX_PARTITIONS} partitions"
            )
        if not self.supports_partitions:
            raise PartitioningError(
                f"{self.display_url}: --partitions is for PostgreSQL stores only (this is a "
                f"{self.dialect_name} store, which is never partitioned); nothing was changed"
            )

    def _check_partitioning(self, conn: Connection, partitions: int | None) -> None:
        """An existing store asked for ``partitions`` must have exactly that layout."""
        if partitions is None:
            return
        have = self.partitions(conn)
        if have == partitions:
            return
        layout = "is not partitioned" if have is None else f"has {have} partitions"
        raise PartitioningError(
            f"{self.display_url} already holds a store that {layout}; --partitions "
            f"{partitions} only applies when a store is created (nothing was changed; "
            "create the partitioned store in a new database or schema)"
        )

    def _create_store_tables(self, conn: Connection, partitions: int | None) -> None:
        """Create the log's tables (``partitions``: see ``initialise``; only backends with
        ``supports_partitions`` are given a number)."""
        schema.metadata.create_all(conn)

    def check_store(self) -> None:
        """Make sure a store exists here, reading only; ``NoStoreError`` if the database
        holds none (nothing is created: the commands that only read open stores this way)."""
        with self.transaction() as conn:
            if not self._check_existing(conn, schema.tables_present(conn, _KNOWN_TABLES)):
                raise NoStoreError(self.display_url)

    def _initialise_once(self, allow_existing: bool, partitions: int | None = None) -> bool:
        with self.transaction() as conn:  # the usual case reads only: no write lock taken
            names = schema.tables_present(conn, _KNOWN_TABLES)
            if self._check_existing(conn, names):
                self._check_partitioning(conn, partitions)
                if schema.ADDED_TABLES - names:
                    self._add_tables()
                return False
        with self.transaction(write=True) as conn:
            self._lock_schema(conn)
            names = set(inspect(conn).get_table_names())
            if self._check_existing(conn, names):  # another process created it meanwhile
                self._check_partitioning(conn, partitions)
                return False
            if names and not allow_existing:
                shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
                raise ForeignDatabaseError(
                    f"{self.display_url} already holds tables that are not clusterstore's "
                    f"({shown}); use another database, or run `clusterstore init "
                    "--allow-existing` to add the store beside them"
                )
            self._init_storage(conn)
            # SQLite's _init_storage commits and begins again: look once more
            if self._check_existing(conn, set(inspect(conn).get_table_names())):
                self._check_partitioning(conn, partitions)
                return False
            self._create_store_tables(conn, partitions)
            for ddl in self._immutability_ddl():
                conn.exec_driver_sql(ddl)
            conn.execute(
                schema.meta.insert(),
                [
                    {"key": "application", "value": schema.APPLICATION},
                    {"key": "schema_version", "value": str(schema.SCHEMA_VERSION)},
                    {"key": "created_at", "value": datetime.now(UTC).isoformat()},
                ],
            )
            return True

    def _add_tables(self) -> None:
        """Create the tables added after the first release that this (older) store lacks."""
        with self.transaction(write=True) as conn:
            self._lock_schema(conn)
            missing = schema.ADDED_TABLES - set(inspect(conn).get_table_names())
            tables = [t for t in schema.metadata.sorted_tables if t.name in missing]
            schema.metadata.create_all(conn, tables=tables, checkfirst=True)

    def _check_existing(self, conn: Connection, names: set[str]) -> bool:
        """True if the store's tables exist (and are usable); False if they must be made."""
        if "cs_meta" not in names:
            return False
        self._check_meta(conn)
        missing = schema.STORE_TABLES - names
        if missing:
            raise SchemaError(
                f"{self.display_url}: the clusterstore tables {sorted(missing)} are missing; "
                "the database is damaged"
            )
        return True

    def _check_meta(self, conn: Connection) -> None:
        rows = dict(conn.execute(select(schema.meta.c.key, schema.meta.c.value)).all())
        if rows.get("application") != schema.APPLICATION:
            raise ForeignDatabaseError(f"{self.display_url} is not a clusterstore database")
        version = int(rows.get("schema_version", "0"))
        if version > schema.SCHEMA_VERSION:
            raise SchemaError(
                f"{self.display_url} has store schema version {version}, newer than this "
                f"clusterstore supports ({schema.SCHEMA_VERSION}); upgrade clusterstore"
            )

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ append

    def append_events(
        self, run_id: UUID, batch: Batch, *, expected_seq: int | None = None
    ) -> AppendResult:
        """Append ``batch`` to ``run_id`` at seqs ``expected_seq + 1 ...``, all or nothing.

        - head == expected_seq: the batch is written.
        - head > expected_seq: the stored overlap must be byte-identical (an idempotent
          re-send: nothing changes for that part, the remainder, if any, is written);
          otherwise ``EventConflictError``.
        - head < expected_seq: ``ConcurrencyError`` (there would be a gap).
        ``expected_seq=None`` appends at the current head.
        A lock or a lost race is retried with backoff: safe, because the append is idempotent.
        """
        return retrying(
            lambda: self._append_once(run_id, batch, expected_seq),
            (DuplicateKeyError, DatabaseBusyError),
            lambda e: (
                DatabaseBusyError(
                    f"{self.display_url}: run {run_id}: {self.busy_reason(retried=True)}"
                )
                if isinstance(e, DatabaseBusyError)
                else DatabaseBusyError(
                    f"{self.display_url}: run {run_id} could not be appended to after "
                    f"{APPEND_RETRIES} attempts; concurrent writers kept taking the same key"
                )
            ),
            bound=self.lock_wait,
        )

    def _append_once(self, run_id: UUID, batch: Batch, expected_seq: int | None) -> AppendResult:
        n = batch_len(batch)
        if n == 0:  # the general rule with an empty overlap: only a gap is refused
            head = self.run_head(run_id)
            expected = head if expected_seq is None else expected_seq
            if expected < 0 or expected > head:
                raise ConcurrencyError(run_id, expected, head)
            return AppendResult(run_id, head, 0, expected + 1, None)
        with self.transaction(write=True) as conn:
            with self.waiting_for_lock(WAITING_FOR_RUN):
                self._lock_run(conn, run_id)
            head = self._head(conn, run_id)
            expected = head if expected_seq is None else expected_seq
            if expected < 0 or expected > head:
                raise ConcurrencyError(run_id, expected, head)
            overlap = min(head, expected + n) - expected
            if overlap:
                self._check_overlap(conn, run_id, expected, head, batch_slice(batch, 0, overlap))
            rest = batch_slice(batch, overlap, n) if overlap else batch
            if batch_len(rest) == 0:
                return AppendResult(run_id, head, 0, expected + 1, None)
            first_seq = head + 1
            self._insert_events(conn, run_id, first_seq, rest)
            with self.waiting_for_lock(WAITING_FOR_LOG):
                position = self._allocate_position(conn)
            conn.execute(
                schema.commits.insert().values(
                    position=position,
                    run_id=run_id,
                    first_seq=first_seq,
                    count=batch_len(rest),
                    committed_at=datetime.now(UTC),
                )
            )
            self._after_append(conn, position)
            return AppendResult(
                run_id, head + batch_len(rest), batch_len(rest), expected + 1, position
            )

    def _check_overlap(
        self, conn: Connection, run_id: UUID, expected: int, head: int, batch: Batch
    ) -> None:
        e = schema.events
        stored = conn.execute(
            select(e.c.seq, e.c.type, e.c.version, e.c.payload)
            .where(e.c.run_id == run_id, e.c.seq > expected, e.c.seq <= expected + batch_len(batch))
            .order_by(e.c.seq)
        ).all()
        for offset, (want, row) in enumerate(zip(batch_payloads(batch), stored, strict=True)):
            if (
                row.seq != expected + 1 + offset
                or (row.type, row.version, bytes(row.payload)) != want
            ):
                raise EventConflictError(run_id, expected + 1 + offset, expected, head)

    def _head(self, conn: Connection, run_id: UUID) -> int:
        e = schema.events
        value = conn.execute(select(func.max(e.c.seq)).where(e.c.run_id == run_id)).scalar()
        return int(value or 0)

    # ------------------------------------------------------------------ reads

    def run_head(self, run_id: UUID) -> int:
        """The seq of the run's last event (0 when it has none)."""
        with self.transaction() as conn:
            return self._head(conn, run_id)

    def list_runs(self) -> list[RunHead]:
        """Every run with its head, oldest first: the runs of ``cs_runs`` and any run the
        log's commits hold that ``cs_runs`` lacks (its row deleted around the store; dated
        by its first commit), so such a run is still listed, shown and verified."""
        r, e = schema.runs, schema.events
        known = select(r.c.run_id, r.c.created_at.label("created_at"))
        u = union_all(known, _unregistered_runs()).subquery()
        head = select(func.max(e.c.seq)).where(e.c.run_id == u.c.run_id).scalar_subquery()
        with self.transaction() as conn:
            rows = conn.execute(
                select(u.c.run_id, u.c.created_at, head).order_by(u.c.created_at, u.c.run_id)
            ).all()
        return [RunHead(row[0], _utc(row[1]), int(row[2] or 0)) for row in rows]

    def unregistered_runs(self) -> set[UUID]:
        """Runs the log's commits hold that have no ``cs_runs`` row."""
        with self.transaction() as conn:
            return {row[0] for row in conn.execute(_unregistered_runs())}

    def restore_run_rows(self) -> list[UUID]:
        """Insert the missing ``cs_runs`` rows (dated by each run's first commit)."""
        with self.transaction(write=True) as conn:
            rows = conn.execute(_unregistered_runs()).all()
            if rows:
                conn.execute(
                    schema.runs.insert(), [{"run_id": a, "created_at": b} for a, b in rows]
                )
        return sorted(row[0] for row in rows)

    def find_runs(self, prefix: str) -> list[UUID]:
        """Runs whose id (hex, dashes ignored) starts with ``prefix``; at most 10 returned."""
        want = prefix.replace("-", "").lower()
        with self.transaction() as conn:
            ids = conn.execute(select(schema.runs.c.run_id)).scalars().all()
            ids = [*ids, *(row[0] for row in conn.execute(_unregistered_runs()))]
        return [u for u in ids if u.hex.startswith(want)][:10]

    def read_stream(
        self,
        run_id: UUID,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[StoredEvent]:
        """A run's events with seq > after (and <= until), in seq order, read in pages."""
        for page in self.read_stream_pages(
            run_id, after=after, until=until, limit=limit, page_size=page_size
        ):
            yield from page

    def read_stream_pages(
        self,
        run_id: UUID,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[list[StoredEvent]]:
        """Like ``read_stream`` but yields lists of up to ``page_size`` events; each page is
        one short transaction, so memory stays bounded and no long read blocks the writers."""
        e = schema.events
        remaining = limit
        cursor = after
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            cond = [e.c.run_id == run_id, e.c.seq > cursor]
            if until is not None:
                cond.append(e.c.seq <= until)
            with self.transaction() as conn:
                rows = conn.execute(
                    # SQLite keeps the type a value was written with: a payload rewritten
                    # around the store as TEXT (e.g. with ||) must still read as its bytes.
                    select(e.c.seq, e.c.type, e.c.version, cast(e.c.payload, LargeBinary))
                    .where(and_(*cond))
                    .order_by(e.c.seq)
                    .limit(size)
                ).all()
            if not rows:
                return
            yield [StoredEvent(run_id, r[0], r[1], r[2], bytes(r[3])) for r in rows]
            cursor = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < size:
                return

    def max_position(self) -> int:
        """The global position of the last committed event (0 for an empty log)."""
        with self.transaction() as conn:
            return next_position(conn) - 1

    def read_commits(self, *, after: int = 0, limit: int | None = None) -> list[Commit]:
        """Commits that hold events at global positions > ``after``, in position order."""
        c = schema.commits
        query = (
            select(c.c.position, c.c.run_id, c.c.first_seq, c.c.count, c.c.committed_at)
            .where(c.c.position + c.c.count - 1 > after)
            .order_by(c.c.position)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.transaction() as conn:
            rows = conn.execute(query).all()
        return [Commit(r[0], r[1], r[2], r[3], _utc(r[4])) for r in rows]

    def read_all(
        self, *, after: int = 0, limit: int | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[StoredEvent]:
        """The global feed: every event with position > ``after``, in position order."""
        for page in self.read_all_pages(after=after, limit=limit, page_size=page_size):
            yield from page

    def read_all_pages(
        self, *, after: int = 0, limit: int | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[list[StoredEvent]]:
        """The global feed in pages; a page never spans two runs (it is one stretch of one
        commit), which lets consumers decode it as a block."""
        remaining = limit
        cursor = after
        while remaining is None or remaining > 0:
            commits = self.read_commits(after=cursor, limit=64)
            if not commits:
                return
            for commit in commits:
                start_seq = commit.first_seq + max(0, cursor - commit.position + 1)
                for page in self.read_stream_pages(
                    commit.run_id,
                    after=start_seq - 1,
                    until=commit.last_seq,
                    limit=remaining,
                    page_size=page_size,
                ):
                    delta = commit.position - commit.first_seq
                    yield [ev._replace(position=ev.seq + delta) for ev in page]
                    cursor = page[-1].seq + delta
                    if remaining is not None:
                        remaining -= len(page)
                        if remaining <= 0:
                            return


def next_position(conn: Connection) -> int:
    """The global position after the last committed event (1 for an empty log)."""
    c = schema.commits
    row = conn.execute(
        select(c.c.position, c.c.count).order_by(c.c.position.desc()).limit(1)
    ).first()
    return 1 if row is None else int(row[0] + row[1])

"""The event store: typed appends with an expected sequence, decoded reads, run lookup.

    with EventStore.open("runs.db") as store:
        store.append(run_id, [RunStarted(...)], expected_seq=0)
        for seq, event in store.read(run_id):
            ...

``EventStore.open`` initialises a new or empty database on first use and refuses a
database that holds other applications' tables (see ``Recorder.initialise``).

The layers above the log (projections, audit, clustering, legacy import, the CLI) use the
store's methods only; ``recorder`` (the backend) is the log package's own. The methods under
"read models" are the backend's capabilities that the projections need (``capabilities``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy import Connection, Table

from . import checkpoints, log_reads
from .capabilities import Waker
from .codec import PackedEvents, decode, encode
from .config import make_recorder, resolve_url
from .errors import AmbiguousRunError, NoDirectoryError, NoStoreError, RunNotFoundError
from .events import Event
from .feed import FeedBlock, read_feed_blocks
from .recorder import PAGE_SIZE, AppendResult, Recorder, RunHead, StoredEvent
from .rows import AssignmentRows
from .waiting import WaitNotifier, announced


class RecordedEvent(NamedTuple):
    seq: int
    event: Event


class EventStore:
    def __init__(self, recorder: Recorder, *, created: bool = False):
        self.recorder = recorder
        self.created = created  # this open created the store's tables

    @classmethod
    def open(
        cls,
        db: str | os.PathLike[str] | None = None,
        *,
        allow_existing: bool = False,
        create: bool = True,
        partitions: int | None = None,
        lock_wait: float | None = None,
        on_wait: WaitNotifier | None = None,
    ) -> EventStore:
        """Open (and on first use create) the store at ``db`` (URL or SQLite path).

        ``create=False`` opens an existing store for reading only: nothing is created or
        changed (a SQLite file is opened ``mode=ro``, PostgreSQL sessions are read-only),
        a location without a store is a ``NoStoreError``, and any write raises
        ``ReadOnlyDatabaseError``. It works on a read-only medium and with a role that may
        only SELECT.

        ``partitions`` (PostgreSQL): a new store's log and read-model assignment tables are
        hash-partitioned by run into that many partitions; an existing store must already be
        partitioned so, else ``PartitioningError`` (nothing changed).
        ``lock_wait``: seconds a lock held by another process is waited for before a
        ``DatabaseBusyError`` (default ``$CLUSTERSTORE_LOCK_WAIT``, else 60); ``on_wait`` is
        told while such a wait lasts (``waiting``)."""
        try:
            url = resolve_url(db)
        except NoDirectoryError as e:
            if create:
                raise
            raise NoStoreError(e.path) from e  # a read would create nothing anyway
        recorder = make_recorder(url, read_only=not create, lock_wait=lock_wait, on_wait=on_wait)
        try:
            if not create:
                recorder.check_store()
                return cls(recorder)
            created = recorder.initialise(allow_existing=allow_existing, partitions=partitions)
        except BaseException:
            recorder.dispose()
            raise
        return cls(recorder, created=created)

    def close(self) -> None:
        self.recorder.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def display_url(self) -> str:
        return self.recorder.display_url

    @property
    def backend(self) -> str:
        return self.recorder.dialect_name

    @property
    def lock_wait(self) -> float:
        """Seconds a lock held by another process is waited for (``waiting``)."""
        return self.recorder.lock_wait

    def waiting_for(self, what: str) -> AbstractContextManager[None]:
        """Around a wait for another process (e.g. a projection runner's lock): announced
        to the store's ``on_wait`` while it lasts longer than a moment."""
        return announced(self.recorder.on_wait, what, self.recorder.lock_wait)

    def local_files(self) -> list[Path]:
        """The files on this machine that hold the store: a SQLite database and its
        ``-wal``, ``-shm`` and ``-journal`` (listed whether or not they exist); none for
        PostgreSQL. Commands that write files refuse these."""
        return self.recorder.local_files()

    # ------------------------------------------------------------------ writes

    def append(
        self,
        run_id: UUID,
        events: Sequence[Event] | PackedEvents,
        *,
        expected_seq: int | None = None,
    ) -> AppendResult:
        """Append events (or a packed batch) at ``expected_seq + 1 ...``; see
        ``Recorder.append_events`` for the idempotency and conflict rules."""
        batch = events if isinstance(events, PackedEvents) else [encode(e) for e in events]
        return self.recorder.append_events(run_id, batch, expected_seq=expected_seq)

    # ------------------------------------------------------------------ reads

    def head(self, run_id: UUID) -> int:
        return self.recorder.run_head(run_id)

    def runs(self) -> list[RunHead]:
        return self.recorder.list_runs()

    def resolve_run(self, ref: str | UUID) -> UUID:
        """A full run id or a unique prefix of one (dashes optional), like git."""
        if isinstance(ref, UUID):
            candidates = [ref] if self.recorder.run_head(ref) else []
        else:
            text = ref.strip().lower()
            if not text or any(c not in "0123456789abcdef-" for c in text):
                raise RunNotFoundError(f"{ref!r} is not a run id (hex digits, dashes allowed)")
            candidates = self.recorder.find_runs(text)
        if not candidates:
            raise RunNotFoundError(
                f"no run matches {str(ref)!r}; `clusterstore runs list` shows them"
            )
        if len(candidates) > 1:
            shown = ", ".join(str(c) for c in candidates[:3])
            raise AmbiguousRunError(
                f"run prefix {str(ref)!r} is ambiguous: it matches {shown}"
                f"{' and more' if len(candidates) > 3 else ''}; give more characters"
            )
        return candidates[0]

    def read(
        self, run_id: UUID, *, after: int = 0, until: int | None = None, limit: int | None = None
    ) -> Iterator[RecordedEvent]:
        """A run's decoded events in seq order (streamed in pages)."""
        for ev in self.recorder.read_stream(run_id, after=after, until=until, limit=limit):
            yield RecordedEvent(ev.seq, decode_stored(ev))

    def read_raw(
        self, run_id: UUID, *, after: int = 0, until: int | None = None, limit: int | None = None
    ) -> Iterator[StoredEvent]:
        return self.recorder.read_stream(run_id, after=after, until=until, limit=limit)

    def read_stream_pages(
        self,
        run_id: UUID,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[list[StoredEvent]]:
        """A run's stored events in seq order, in pages of up to ``page_size`` (one short
        read transaction each)."""
        return self.recorder.read_stream_pages(
            run_id, after=after, until=until, limit=limit, page_size=page_size
        )

    def feed(self, *, after: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        """The global feed: every event after a global position, in position order."""
        return self.recorder.read_all(after=after, limit=limit)

    def read_feed_blocks(
        self,
        *,
        after: int = 0,
        max_events: int = PAGE_SIZE,
        assignments: bool = True,
        conn: Connection | None = None,
        mark_damage: bool = False,
    ) -> list[FeedBlock]:
        """The global feed after ``after`` as blocks for bulk consumers (``feed``)."""
        return read_feed_blocks(
            self.recorder,
            after=after,
            max_events=max_events,
            assignments=assignments,
            conn=conn,
            mark_damage=mark_damage,
        )

    def max_position(self) -> int:
        return self.recorder.max_position()

    def read_events_at(
        self, keys: Sequence[tuple[UUID, int]]
    ) -> dict[tuple[UUID, int], StoredEvent]:
        """The stored events at the given (run_id, seq) keys (missing keys are left out)."""
        return log_reads.read_events_at(self.recorder, keys)

    def count_events(self, run_id: UUID, *, type: int) -> int:
        """How many of the run's stored events have ``type``."""
        return log_reads.count_events(self.recorder, run_id, type=type)

    def read_stream_block(self, run_id: UUID, *, after: int, until: int) -> log_reads.StreamBlock:
        """The run's events with ``after < seq <= until``, the fixed-width assignments'
        payloads concatenated by the database (``log_reads.StreamBlock``)."""
        return log_reads.read_stream_block(self.recorder, run_id, after=after, until=until)

    def next_seq(self, run_id: UUID, *, after: int) -> int | None:
        """The run's smallest stored seq above ``after``, or None."""
        return log_reads.next_seq(self.recorder, run_id, after=after)

    def read_committed_heads(self) -> dict[UUID, int]:
        """Each run's last committed seq, from the commits."""
        return log_reads.read_committed_heads(self.recorder)

    def unregistered_runs(self) -> set[UUID]:
        """Runs in the log whose ``cs_runs`` row is missing (deleted around the store)."""
        return self.recorder.unregistered_runs()

    def restore_run_rows(self) -> list[UUID]:
        """Insert missing ``cs_runs`` rows again (``init`` does); returns the runs."""
        return self.recorder.restore_run_rows()

    def missing_triggers(self) -> list[str]:
        """The log's append-only triggers that are missing (dropped around the store)."""
        return self.recorder.missing_triggers()

    def restore_triggers(self) -> list[str]:
        """Create missing append-only triggers again (``init`` does); returns their names."""
        return self.recorder.restore_triggers()

    def run_last_position(self, run_id: UUID) -> int | None:
        """The global position of the run's last commit (None: the run has none)."""
        return log_reads.run_last_position(self.recorder, run_id)

    def read_run_commits(self, run_id: UUID) -> list[tuple[int, int]]:
        """The run's append transactions as (first_seq, count), in seq order."""
        return log_reads.read_run_commits(self.recorder, run_id)

    # ------------------------------------------------------------------ checkpoints

    def read_checkpoint(self, run_id: UUID) -> checkpoints.Checkpoint | None:
        """The run's resume checkpoint (``checkpoints``), or None."""
        return checkpoints.read_checkpoint(self.recorder, run_id)

    def write_checkpoint(self, run_id: UUID, state: checkpoints.Checkpoint) -> None:
        """Store the run's resume checkpoint, unless the stored one is as far already."""
        checkpoints.write_checkpoint(self.recorder, run_id, state)

    # ------------------------------------------------------------------ transactions

    def connection(self) -> AbstractContextManager[Connection]:
        """A connection held across several ``transaction(conn=...)`` calls (e.g. by a
        projection runner keeping a session lock); driver errors are converted."""
        return self.recorder.connection()

    def transaction(
        self,
        *,
        write: bool = False,
        conn: Connection | None = None,
        synchronous_commit: bool = True,
    ) -> AbstractContextManager[Connection]:
        """A transaction whose driver errors become ``EventStoreError`` (see
        ``Recorder.transaction``)."""
        return self.recorder.transaction(
            write=write, conn=conn, synchronous_commit=synchronous_commit
        )

    # ------------------------------------------------------------------ read models

    def upsert_statement(self, table: Table) -> Any:
        """The INSERT for ``table`` with ``on_conflict_do_nothing``/``..._do_update``."""
        return self.recorder.upsert_statement(table)

    def insert_assignment_rows(
        self, conn: Connection, table: Table, rows: AssignmentRows, *, fresh: bool = False
    ) -> None:
        """Bulk-load a batch of read-model assignment rows (the backend's fast path);
        ``fresh``: into a table created in this transaction (``rebuild_in_one_transaction``)."""
        self.recorder.insert_assignment_rows(conn, table, rows, fresh=fresh)

    def read_assignment_rows(
        self,
        conn: Connection,
        table: Table,
        run_key: int,
        *,
        after: int,
        limit: int,
        until: int | None = None,
    ) -> AssignmentRows:
        """Up to ``limit`` read-model assignment rows of ``run_key`` with ``after < seq <=
        until``, in seq order, as numpy columns (the backend's bulk read)."""
        return self.recorder.read_assignment_rows(
            conn, table, run_key, after=after, limit=limit, until=until
        )

    def replace_view(self, conn: Connection, name: str, select_sql: str) -> None:
        self.recorder.replace_view(conn, name, select_sql)

    def create_table(self, conn: Connection, table: Table, *, indexes: bool = True) -> None:
        """Create ``table``, partitioned by its run column where the store is partitioned."""
        self.recorder.create_table(conn, table, indexes=indexes)

    def partitions(self) -> int | None:
        """How many hash partitions by run the store has (None: not partitioned)."""
        with self.transaction() as conn:
            return self.recorder.partitions(conn)

    def analyze_table(self, conn: Connection, name: str) -> None:
        self.recorder.analyze_table(conn, name)

    def prepare_index_build(self, conn: Connection) -> None:
        self.recorder.prepare_index_build(conn)

    @property
    def rebuild_in_one_transaction(self) -> bool:
        """Whether a rebuild loads and swaps in its new generation in one transaction."""
        return self.recorder.rebuild_in_one_transaction

    @property
    def primary_key_after_load(self) -> bool:
        """Whether a rebuild may load a table first and add its primary key afterwards."""
        return self.recorder.primary_key_after_load

    def drop_tables(self, conn: Connection, names: list[str]) -> None:
        self.recorder.drop_tables(conn, names)

    def lock_setup(self, conn: Connection) -> None:
        """Serialise one-time CREATE TABLEs until the transaction ends."""
        self.recorder.lock_setup(conn)

    def sql_uuid_text(self, expr: str, *, nullable: bool = False) -> str:
        return self.recorder.sql_uuid_text(expr, nullable=nullable)

    def sql_derived_uuid(self, prefix: str, number: str) -> str:
        return self.recorder.sql_derived_uuid(prefix, number)

    # ------------------------------------------------------------------ waiting and locks

    def commit_waker(self) -> AbstractContextManager[Waker]:
        """A waker whose ``wait(seconds)`` may end early when new commits arrive."""
        return self.recorder.commit_waker()

    @property
    def has_session_locks(self) -> bool:
        """Whether the database holds locks for the life of a connection (``*_session_lock``)."""
        return self.recorder.has_session_locks

    def try_session_lock(self, conn: Connection, name: str) -> bool:
        return self.recorder.try_session_lock(conn, name)

    def release_session_lock(self, conn: Connection, name: str) -> None:
        self.recorder.release_session_lock(conn, name)

    def session_lock_holder(self, conn: Connection, name: str) -> str | None:
        return self.recorder.session_lock_holder(conn, name)


def decode_stored(ev: StoredEvent) -> Event:
    return decode(ev.type, ev.version, ev.payload, run_id=ev.run_id, seq=ev.seq)

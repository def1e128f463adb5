"""PostgreSQL: the server for teams and for scale (psycopg 3).

- Fast path: a packed batch becomes one binary ``COPY`` stream built with numpy in bulk
  (fixed-width tuples), not one Python call per row, written in chunks of 16k rows so the
  server ingests one chunk while the next is built.
- Appends to one run are serialised by a row lock on its ``cs_runs`` row.
- Never-skip global feed: positions are allocated at the *end* of the append transaction,
  under ``LOCK TABLE cs_commits IN EXCLUSIVE MODE`` (readers' plain SELECTs are not
  blocked). The lock is held only from allocation to COMMIT, so a commit with a smaller
  position can never become visible after one with a larger position. The COPY itself runs
  before the lock, so writers of different runs still load in parallel. Measured against
  the alternatives in benchmarks/README.md.
- ``NOTIFY clusterstore_log`` is sent with each append; followers use it only to wake up
  and always re-poll (notifications can be lost across reconnects): ``commit_waker``.
- Read models: rows are loaded with one binary ``COPY`` stream per batch (fixed-width tuples
  built with numpy); the projection runner's lock is a session-level advisory lock keyed by
  the name and the current schema (the server frees it when the connection ends, also after
  a SIGKILL).
- Driver errors are classified by SQLSTATE (``classify_error``), never by message text.
- Partitioned by run (``init --partitions N``, or the server setting
  ``clusterstore.partitions`` when a store is created): ``cs_events`` and each read-model
  generation's assignment table are declarative ``PARTITION BY HASH`` on their run column
  with ``N`` partitions ``<table>_p<i>`` (``create_table``); the primary keys start with
  that column, so appends, idempotency checks, heads and per-run reads touch one
  partition. The append-only row triggers on ``cs_events`` are cloned to every partition;
  each log partition also gets its own TRUNCATE trigger (statement triggers are not cloned).
  The store's partition count is read from the catalog (``partitions``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

import numpy as np
import psycopg
from sqlalchemy import Connection, Engine, Table, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateIndex, CreateTable

from . import schema
from .capabilities import Waker
from .codec import Batch, PackedEvents, in_key_order
from .driver_errors import DriverError
from .errors import ConfigurationError, EventStoreError, NoSuchDatabaseError, PartitioningError
from .recorder import Recorder, masked_url, next_position
from .rows import COLUMNS, LAST_SEQ, AssignmentRows

NOTIFY_CHANNEL = "clusterstore_log"
# The server setting (a custom GUC: ``ALTER DATABASE d SET clusterstore.partitions = 16``,
# or ``options=-cclusterstore.partitions=16`` in the URL) that partitions every store
# created without an explicit ``--partitions``.
PARTITIONS_SETTING = "clusterstore.partitions"
_COPY_EVENTS = "COPY cs_events (run_id, seq, type, version, payload) FROM STDIN (FORMAT BINARY)"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
INDEX_BUILD_MEMORY = 256 * 1024 * 1024  # bytes of sort memory for a rebuild's key build
COPY_CHUNK_ROWS = 16_384  # ~1 MB per write; one 100k stream built at once measured 15-25% slower


def copy_rows_dtype(width: int) -> np.dtype[Any]:
    """One binary COPY tuple of cs_events with a fixed-width payload."""
    return np.dtype(
        [
            ("nfields", ">i2"),
            ("run_len", ">i4"),
            ("run_id", "V16"),
            ("seq_len", ">i4"),
            ("seq", ">i8"),
            ("type_len", ">i4"),
            ("type", ">i2"),
            ("version_len", ">i4"),
            ("version", ">i2"),
            ("payload_len", ">i4"),
            ("payload", f"V{width}"),
        ]
    )


def build_copy_tuples(run_id: UUID, first_seq: int, batch: PackedEvents) -> bytes:
    """The binary COPY tuples (no header or trailer) for a packed batch."""
    n = batch.count
    rows = np.empty(n, dtype=copy_rows_dtype(batch.width))
    rows["nfields"] = 5
    rows["run_len"] = 16
    rows["run_id"] = np.frombuffer(run_id.bytes, dtype="V16")[0]
    rows["seq_len"] = 8
    rows["seq"] = np.arange(first_seq, first_seq + n, dtype=np.int64)
    rows["type_len"] = 2
    rows["type"] = batch.type
    rows["version_len"] = 2
    rows["version"] = batch.version
    rows["payload_len"] = batch.width
    rows["payload"] = np.frombuffer(batch.data, dtype=f"V{batch.width}")
    return rows.tobytes()


def _read_only_options(url: URL) -> tuple[URL, str]:
    """``url`` without its ``options`` and the libpq ``options`` string that keeps them
    (e.g. a search_path) and makes every transaction read-only."""
    return _with_options(url, "-c default_transaction_read_only=on")


def _with_options(url: URL, *settings: str) -> tuple[URL, str]:
    """``url`` without its ``options`` and the libpq ``options`` string of ``settings``
    followed by the URL's own (which win where they set the same thing)."""
    given = url.query.get("options")
    parts = [given] if isinstance(given, str) else list(given or ())
    return url.difference_update_query(["options"]), " ".join([*settings, *parts])


_APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION cs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'clusterstore: %% is append-only; %% is not allowed',
        coalesce((SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
                  WHERE i.inhrelid = TG_RELID), TG_TABLE_NAME),  -- a partition: its table
        TG_OP USING ERRCODE = 'raise_exception';
END $$
"""


def _append_only_triggers() -> dict[str, str]:
    triggers = {}
    for table in schema.IMMUTABLE_TABLES:
        triggers[f"{table}_no_update_delete"] = (
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION cs_append_only()"
        )
        triggers[f"{table}_no_truncate"] = (
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION cs_append_only()"
        )
    return triggers


# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_SQLSTATES = {
    "P0001": DriverError.IMMUTABLE,  # raise_exception: the append-only trigger
    "23505": DriverError.DUPLICATE_KEY,  # unique_violation
    "55P03": DriverError.BUSY,  # lock_not_available (lock_timeout)
    "25006": DriverError.READ_ONLY,  # read_only_sql_transaction
    "57014": DriverError.CANCELED,  # query_canceled (statement_timeout, pg_cancel_backend)
    "53100": DriverError.DISK_FULL,  # disk_full
    "57P01": DriverError.UNAVAILABLE,  # admin_shutdown
    "57P02": DriverError.UNAVAILABLE,  # crash_shutdown
    "57P03": DriverError.UNAVAILABLE,  # cannot_connect_now
}


@contextmanager
def _driver_errors(sql: str) -> Iterator[None]:
    """psycopg errors raised by statements run on the driver's own cursor (COPY: a
    statement_timeout, a cancel, a lock wait, a full disk, a lost connection) as
    SQLAlchemy's ``DBAPIError``, which ``Recorder.transaction`` converts like any other."""
    try:
        yield
    except psycopg.Error as e:
        raise sa_exc.DBAPIError.instance(sql, None, e, psycopg.Error) from e


_ROW_DTYPES = (np.int64, np.int64, "V16", np.int64, np.float32, "V16", np.bool_)
# one read-model row as ``read_assignment_rows`` reads it (36 bytes, big-endian, unpadded),
# and a kept legacy id with its seq
_ROW_RECORD = np.dtype(
    [("seq", ">i8"), ("embedding_id", "V16"), ("cluster", ">i8"), ("distance", ">f4")]
)
_LEGACY_RECORD = np.dtype([("seq", ">i8"), ("legacy_id", "V16")])
_ROWS_SQL = (
    "SELECT count(*), string_agg(int8send(seq) || uuid_send(embedding_id) || "
    "int8send(cluster::int8) || float4send(coalesce(distance, 'NaN')::real), ''::bytea), "
    "count(legacy_id) FROM {source} WHERE {where}"
)
_LEGACY_SQL = (
    "SELECT string_agg(int8send(seq) || uuid_send(legacy_id), ''::bytea) FROM {table} "
    "WHERE {where} AND legacy_id IS NOT NULL"
)


class PostgresRecorder(Recorder):
    dialect_name = "postgresql"
    concat_payloads_sql = "string_agg(e.payload, ''::bytea ORDER BY e.seq)"
    # PostgreSQL 15 sorts an ordered aggregate's input even when the scan delivers it in seq
    # order already (the feed's read took 1.6x as long with the sort); without ORDER BY each
    # payload carries its offset and the feed sorts by those (benchmarks/README.md, "Replay").
    concat_payloads_with_offsets_sql = (
        "string_agg(e.payload || int4send((e.seq - c.first_seq)::int4), ''::bytea)"
    )
    concat_payloads_with_seqs_sql = "string_agg(e.payload || int8send(e.seq), ''::bytea)"
    # 1,000 runs' first and last events (``runs list``): 2,000 keys as VALUES took ~0.1 s
    # of client CPU to compile and bind; as two arrays, one index lookup per key still
    events_at_sql = (
        "SELECT e.run_id, e.seq, e.type, e.version, e.payload "
        "FROM unnest(CAST(:runs AS uuid[]), CAST(:seqs AS bigint[])) AS k(run_id, seq) "
        "JOIN cs_events e ON e.run_id = k.run_id AND e.seq = k.seq"
    )
    has_session_locks = True
    _url_wait: tuple[float | None] | None = None  # ``url_lock_timeout``, once asked
    supports_partitions = True
    # A rebuild's assignment table: COPY without the key, then one sorted key build took
    # 0.7x the time of COPY into the keyed table (benchmarks/README.md, "Replay").
    primary_key_after_load = True
    # A rebuild's load, key build and swap in one transaction: the assignment table created
    # in it is loaded with COPY FREEZE (no hint bits to set later, by the key build, ANALYZE
    # or the first readers); the load took 0.8x the time (benchmarks/README.md, "Replay").
    rebuild_in_one_transaction = True

    def _create_engine(self, url: URL) -> Engine:
        connect_args: dict[str, Any] = {"connect_timeout": 10, "application_name": "clusterstore"}
        # a lock held by another session is waited for at most the lock wait (``waiting``)
        settings = [f"-c lock_timeout={self._lock_timeout_ms()}"]
        if self.read_only:  # the server refuses any write of this engine's sessions
            settings.append("-c default_transaction_read_only=on")
        url, connect_args["options"] = _with_options(url, *settings)
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    def _lock_timeout_ms(self) -> int:
        return max(1, round(self.lock_wait * 1000))

    def url_lock_timeout(self) -> float | None:
        """The URL's ``options`` may set ``lock_timeout`` after ours (theirs wins): asked
        of the server once, on the error path (never parsed from the options)."""
        if self._url_wait is None:
            try:
                with self.engine.connect() as conn:
                    ms = conn.execute(
                        text("SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout'")
                    ).scalar_one()
            except sa_exc.DBAPIError:
                return None  # the server went away: not asked yet
            # 0: the URL turned lock_timeout off (a lock is waited for without end)
            self._url_wait = (None if ms in (0, self._lock_timeout_ms()) else ms / 1000,)
        return self._url_wait[0]

    # ------------------------------------------------------------------ URLs

    @classmethod
    def check_url(cls, url: URL) -> URL:
        # the driver named after "+", if any; not ``get_driver_name()``, which loads the
        # dialect of the scheme, and SQLAlchemy has none for libpq's ``postgres://``
        if url.drivername.partition("+")[2] not in ("psycopg", ""):
            raise ConfigurationError(
                f"{masked_url(url)}: only the psycopg (3) driver is "
                "supported; use postgresql+psycopg://..."
            )
        if not url.database:
            raise ConfigurationError(
                f"{masked_url(url)} names no database; give "
                "postgresql://USER@HOST/DATABASE (the server's default database is never used)"
            )
        return url.set(drivername="postgresql+psycopg")

    @classmethod
    def read_only_engine(cls, url: URL) -> Engine:
        url, options = _read_only_options(url)
        return create_engine(url, connect_args={"options": options, "connect_timeout": 10})

    # ------------------------------------------------------------------ errors

    def _convert(self, e: sa_exc.DBAPIError) -> Exception:
        if (
            isinstance(e, sa_exc.OperationalError)
            and self.classify_error(e) is None
            and self._database_missing()
        ):
            url = self.url
            server = f"at {url.host}:{url.port or 5432}" if url.host else "on the local socket"
            flags = (f" -h {url.host}" if url.host else "") + (
                f" -p {url.port}" if url.port else ""
            )
            flags += f" -U {url.username}" if url.username else ""
            return NoSuchDatabaseError(
                f"no such database {url.database!r} on the PostgreSQL server {server} "
                f"({self.display_url}); create it with `createdb{flags} {url.database}`, or "
                "give --db a URL that names an existing database"
            )
        return super()._convert(e)

    def _database_missing(self) -> bool:
        """After a connection failed (psycopg gives such failures no SQLSTATE): does the
        server answer, with the same credentials, on its maintenance database and list no
        database of this name? Asked, never guessed from the error's text."""
        for maintenance in ("postgres", "template1"):
            if maintenance == self.url.database:
                continue
            engine = create_engine(
                self.url.set(database=maintenance), connect_args={"connect_timeout": 5}
            )
            try:
                with engine.connect() as conn:
                    found = conn.execute(
                        text("SELECT 1 FROM pg_database WHERE datname = :d"),
                        {"d": self.url.database},
                    ).first()
                return found is None
            except sa_exc.DBAPIError:
                continue
            finally:
                engine.dispose()
        return False

    def classify_error(self, e: sa_exc.DBAPIError) -> DriverError | None:
        state = getattr(e.orig, "sqlstate", None)
        if not isinstance(state, str):
            return None
        if state.startswith("08"):  # connection_exception and its subclasses
            return DriverError.UNAVAILABLE
        return _SQLSTATES.get(state)

    # ------------------------------------------------------------------ read models

    def upsert_statement(self, table: Table) -> Any:
        return pg_dialect.insert(table)

    def insert_assignment_rows(
        self, conn: Connection, table: Table, rows: AssignmentRows, *, fresh: bool = False
    ) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        # FREEZE: the table was created in this transaction (the server checks it); a
        # partitioned table cannot be loaded frozen
        freeze = fresh and partition_count(conn, table.name) is None
        options = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
        sql = f"COPY {table.name} ({', '.join(COLUMNS)}) FROM STDIN ({options})"
        with _driver_errors(sql), raw.cursor() as cur, cur.copy(sql) as copy:
            for part in rows_copy_parts(rows):
                copy.write(part)

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
        # each row as one fixed-width big-endian record, concatenated by one aggregate in
        # scan order and put in seq order here (an ordered aggregate sorts its input even
        # when the scan delivers it sorted: 2x the server's time); legacy ids, only where
        # the rows have any, by a second read of the same range
        upper = LAST_SEQ if until is None else until
        where = "run_key = :key AND seq > :after AND seq <= :until"
        source = table.name
        if upper - after > limit:  # the range may hold more rows than asked for
            source = f"(SELECT * FROM {table.name} WHERE {where} ORDER BY seq LIMIT :limit) a"
        params = {"key": run_key, "after": after, "until": upper, "limit": limit}
        (row,) = self.fetch_all(conn, _ROWS_SQL.format(source=source, where=where), params)
        n = int(row[0])
        if not n:
            return AssignmentRows(*(np.empty(0, dtype=d) for d in _ROW_DTYPES))
        rec = in_key_order(np.frombuffer(row[1], dtype=_ROW_RECORD), "seq")
        seq = rec["seq"].astype(np.int64)
        legacy, has_legacy = np.zeros(n, dtype="V16"), np.zeros(n, dtype=np.bool_)
        if row[2]:
            params["until"] = int(seq[-1])
            sql = _LEGACY_SQL.format(table=table.name, where=where)
            (kept,) = self.fetch_all(conn, sql, params)
            ids = np.frombuffer(kept[0] or b"", dtype=_LEGACY_RECORD)
            at = np.minimum(np.searchsorted(seq, ids["seq"].astype(np.int64)), n - 1)
            found = seq[at] == ids["seq"]  # a row committed between the reads is not one read
            legacy[at[found]], has_legacy[at[found]] = ids["legacy_id"][found], True
        return AssignmentRows(
            np.full(n, run_key, dtype=np.int64),
            seq,
            rec["embedding_id"].copy(),
            rec["cluster"].astype(np.int64),
            rec["distance"].astype(np.float32),
            legacy,
            has_legacy,
        )

    def sql_uuid_text(self, expr: str, *, nullable: bool = False) -> str:
        return expr

    def sql_derived_uuid(self, prefix: str, number: str) -> str:
        return f"({prefix} || to_hex({number} | (1::bigint << 63)))::uuid"

    def replace_view(self, conn: Connection, name: str, select_sql: str) -> None:
        conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {name} AS {select_sql}")

    def analyze_table(self, conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"ANALYZE {name}")

    def prepare_index_build(self, conn: Connection) -> None:
        """At least ``INDEX_BUILD_MEMORY`` of sort memory for the key built after a load
        (the default 64 MB spills a 1M-row key to disk), never less than the server's."""
        conn.exec_driver_sql(
            "SELECT set_config('maintenance_work_mem', "
            "greatest(setting::bigint, %(kb)s)::text || 'kB', true) "
            "FROM pg_settings WHERE name = 'maintenance_work_mem'",
            {"kb": INDEX_BUILD_MEMORY // 1024},
        )

    # ------------------------------------------------------------------ waiting and locks

    def commit_waker(self) -> AbstractContextManager[Waker]:
        return _listening(self)

    def try_session_lock(self, conn: Connection, name: str) -> bool:
        key = _lock_key(conn, name)
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())

    def release_session_lock(self, conn: Connection, name: str) -> None:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(conn, name)})

    def session_lock_holder(self, conn: Connection, name: str) -> str | None:
        unsigned = _lock_key(conn, name) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            text(
                "SELECT l.pid, a.client_addr, a.backend_start FROM pg_locks l "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = :hi AND l.objid = :lo AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
        ).first()
        if row is None:
            return None
        where = f" from {row[1]}" if row[1] else ""
        return f"PostgreSQL backend pid {row[0]}{where}"

    def _relax_commit(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    # ------------------------------------------------------------------ log

    def _begin_write(self, conn: Connection) -> None:
        """READ COMMITTED, begun implicitly by the driver."""

    def _begin_read(self, conn: Connection) -> None:
        """READ COMMITTED, begun implicitly by the driver."""

    def fetch_all(self, conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
        compiled = text(sql).compile(dialect=conn.dialect)
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            with raw.cursor(binary=True) as cur:
                cur.execute(compiled.string, compiled.construct_params(params))
                return cur.fetchall()
        except psycopg.Error as e:  # converted by ``transaction`` like any driver error
            raise sa_exc.DBAPIError.instance(compiled.string, params, e, psycopg.Error) from e

    def _lock_run(self, conn: Connection, run_id: UUID) -> None:
        conn.exec_driver_sql(
            "INSERT INTO cs_runs (run_id, created_at) VALUES (%(r)s, now()) "
            "ON CONFLICT (run_id) DO NOTHING",
            {"r": run_id},
        )
        conn.exec_driver_sql("SELECT 1 FROM cs_runs WHERE run_id = %(r)s FOR UPDATE", {"r": run_id})

    def _insert_events(self, conn: Connection, run_id: UUID, first_seq: int, batch: Batch) -> None:
        packed = batch if isinstance(batch, PackedEvents) else None
        raw = conn.connection.driver_connection
        assert raw is not None
        with _driver_errors(_COPY_EVENTS), raw.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
            if packed is not None:
                # Written in chunks, so the server ingests one chunk while the next is built.
                copy.write(_COPY_HEADER)
                for lo in range(0, packed.count, COPY_CHUNK_ROWS):
                    chunk = packed.slice(lo, min(lo + COPY_CHUNK_ROWS, packed.count))
                    copy.write(build_copy_tuples(run_id, first_seq + lo, chunk))
                copy.write(_COPY_TRAILER)
            else:
                copy.set_types(["uuid", "int8", "int2", "int2", "bytea"])
                for i, ev in enumerate(batch):  # type: ignore[arg-type]
                    copy.write_row((run_id, first_seq + i, ev.type, ev.version, ev.payload))

    def _allocate_position(self, conn: Connection) -> int:
        conn.exec_driver_sql("LOCK TABLE cs_commits IN EXCLUSIVE MODE")
        return next_position(conn)

    def _after_append(self, conn: Connection, position: int) -> None:
        conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")

    def _immutability_setup(self) -> list[str]:
        return [_APPEND_ONLY_FUNCTION]

    def _immutability_triggers(self) -> dict[str, str]:
        return _append_only_triggers()

    def _existing_triggers(self, conn: Connection) -> set[str]:
        rows = conn.exec_driver_sql(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
        )
        return {str(name) for name in rows.scalars()}

    def _init_storage(self, conn: Connection) -> None:
        """Nothing: PostgreSQL needs no per-database settings."""

    # ------------------------------------------------------------------ partitioning

    def partitions(self, conn: Connection) -> int | None:
        return partition_count(conn, schema.events.name)

    def create_table(self, conn: Connection, table: Table, *, indexes: bool = True) -> None:
        column = table.info.get(schema.RUN_COLUMN)
        n = self.partitions(conn) if column else None
        if column is None or n is None:
            super().create_table(conn, table, indexes=indexes)
            return
        create_partitioned(conn, table, column, n)
        if indexes:
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index))

    def _create_store_tables(self, conn: Connection, partitions: int | None) -> None:
        n = partitions if partitions is not None else partitions_setting(conn)
        if n is None:
            super()._create_store_tables(conn, None)
            return
        for table in schema.metadata.sorted_tables:
            column = table.info.get(schema.RUN_COLUMN)
            if column is None:
                super().create_table(conn, table)
                continue
            create_partitioned(conn, table, column, n)
            if table.name in schema.IMMUTABLE_TABLES:
                conn.exec_driver_sql(_APPEND_ONLY_FUNCTION)
                conn.exec_driver_sql(
                    ";".join(
                        f"CREATE TRIGGER {p}_no_truncate BEFORE TRUNCATE ON {p} "
                        "FOR EACH STATEMENT EXECUTE FUNCTION cs_append_only()"
                        for p in partition_names(table.name, n)
                    )
                )

    def _lock_schema(self, conn: Connection) -> None:
        """Concurrent CREATE TABLEs of a new store would collide: one initialiser per schema
        at a time (READ COMMITTED: the next one then sees the tables)."""
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext('clusterstore:' || "
            "coalesce(current_schema(), '')))"
        )


# ---------------------------------------------------------------------------- partitioning


def partition_names(table: str, n: int) -> list[str]:
    return [f"{table}_p{i}" for i in range(n)]


def create_partitioned(conn: Connection, table: Table, column: str, n: int) -> None:
    """``table`` as ``PARTITION BY HASH (column)`` with ``n`` partitions (no indexes beyond
    the primary key, which PostgreSQL gives every partition)."""
    ddl = str(CreateTable(table, include_foreign_key_constraints=[]).compile(dialect=conn.dialect))
    statements = [f"{ddl.rstrip()} PARTITION BY HASH ({column})"]
    statements += [
        f"CREATE TABLE {name} PARTITION OF {table.name} FOR VALUES WITH (MODULUS {n}, "
        f"REMAINDER {i})"
        for i, name in enumerate(partition_names(table.name, n))
    ]
    conn.exec_driver_sql(";".join(statements))


def partition_count(conn: Connection, table: str) -> int | None:
    """How many partitions the partitioned table ``table`` of the current schema has; None
    when it is a plain table (or missing)."""
    row = conn.exec_driver_sql(
        "SELECT (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = p.partrelid) "
        "FROM pg_partitioned_table p "
        "WHERE p.partrelid = to_regclass(quote_ident(current_schema()) || '.' || %(t)s)",
        {"t": table},
    ).first()
    return None if row is None else int(row[0])


def partitions_setting(conn: Connection) -> int | None:
    """The ``clusterstore.partitions`` server setting (None when unset or empty)."""
    value = conn.exec_driver_sql(
        "SELECT current_setting(%(s)s, true)", {"s": PARTITIONS_SETTING}
    ).scalar()
    if value is None or not str(value).strip():
        return None
    text_value = str(value).strip()
    n = int(text_value) if text_value.isdigit() else None
    if n is None or not schema.MIN_PARTITIONS <= n <= schema.MAX_PARTITIONS:
        raise PartitioningError(
            f"the PostgreSQL setting {PARTITIONS_SETTING} = {text_value!r} is not a number of "
            f"partitions ({schema.MIN_PARTITIONS} to {schema.MAX_PARTITIONS}); nothing was "
            "created"
        )
    return n


# ---------------------------------------------------------------------------- session locks


def advisory_key(schema_name: str, name: str) -> int:
    digest = hashlib.sha256(f"clusterstore/projection/{schema_name}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock_key(conn: Connection, name: str) -> int:
    """Keyed by the current schema too: tests run many stores in one database."""
    return advisory_key(str(conn.exec_driver_sql("SELECT current_schema()").scalar()), name)


# ---------------------------------------------------------------------------- waiting


class ListenWaker:
    """LISTENs on its own autocommit connection; on any error it falls back to sleeping
    and listens again at the next wait. A notification only says "look now": the caller
    re-polls the log, and one lost (a reconnect, a full queue) only delays it by one wait."""

    def __init__(self, recorder: PostgresRecorder):
        self.recorder = recorder
        self.conn: Any = None

    def _listen(self) -> Any:
        if self.conn is None:
            conn = self.recorder.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            except Exception:
                conn.close()
                raise
            self.conn = conn
        return self.conn.connection.driver_connection

    def wait(self, seconds: float) -> None:
        try:
            raw = self._listen()
            for _ in raw.notifies(timeout=seconds, stop_after=1):
                pass
        except (Exception, EventStoreError):  # a lost connection: sleep, listen again later
            self.close()
            time.sleep(seconds)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.invalidate()
                self.conn.close()
            except Exception:
                pass
            self.conn = None


@contextmanager
def _listening(recorder: PostgresRecorder) -> Iterator[Waker]:
    waker = ListenWaker(recorder)
    try:
        yield waker
    finally:
        waker.close()


# ---------------------------------------------------------------------------- read-model rows

_ROWS_COPY_FIELDS: list[tuple[str, str]] = [
    ("nfields", ">i2"),
    ("run_key_len", ">i4"),
    ("run_key", ">i4"),
    ("seq_len", ">i4"),
    ("seq", ">i8"),
    ("id_len", ">i4"),
    ("embedding_id", "V16"),
    ("cluster_len", ">i4"),
    ("cluster", ">i8"),
    ("distance_len", ">i4"),
    ("distance", ">f4"),
    ("legacy_len", ">i4"),  # -1 is NULL, and then no bytes follow
]
_ROWS_DTYPE = np.dtype(_ROWS_COPY_FIELDS)
_ROWS_LEGACY_DTYPE = np.dtype([*_ROWS_COPY_FIELDS, ("legacy_id", "V16")])


def rows_copy_stream(rows: AssignmentRows) -> bytes:
    """The binary COPY stream of ``rows`` for ``rows.COLUMNS`` (rows without a legacy id
    first)."""
    return b"".join(rows_copy_parts(rows))


def rows_copy_parts(rows: AssignmentRows) -> list[bytes | memoryview]:
    """``rows_copy_stream`` in parts, the tuples as views of the arrays numpy built (no
    copy of the stream: concatenating and copying cost a 1M-row load ~0.05 s of CPU)."""
    if not rows.has_legacy.any():
        return [_COPY_HEADER, _rows_tuples(rows, _ROWS_DTYPE), _COPY_TRAILER]
    plain = _rows_tuples(rows.take(~rows.has_legacy), _ROWS_DTYPE)
    legacy = _rows_tuples(rows.take(rows.has_legacy), _ROWS_LEGACY_DTYPE)
    return [_COPY_HEADER, plain, legacy, _COPY_TRAILER]


def _rows_tuples(rows: AssignmentRows, dtype: np.dtype[Any]) -> memoryview:
    out = np.empty(len(rows), dtype=dtype)
    out["nfields"] = len(COLUMNS)
    out["run_key_len"] = 4
    out["run_key"] = rows.run_key
    out["seq_len"] = 8
    out["seq"] = rows.seq
    out["id_len"] = 16
    out["embedding_id"] = rows.embedding_id
    out["cluster_len"] = 8
    out["cluster"] = rows.cluster
    out["distance_len"] = 4
    out["distance"] = rows.distance
    if dtype is _ROWS_LEGACY_DTYPE:
        out["legacy_len"] = 16
        out["legacy_id"] = rows.legacy_id
    else:
        out["legacy_len"] = -1
    return out.data.cast("B")

"""Reading a legacy SQLModel database, read-only and streamed.

The legacy schema is two tables, as SQLModel names them: ``clusteringresult`` (``id`` and
whatever else the user's model had) and ``embeddingcluster`` (``id``, ``embedding_id``,
``clustering_result_id``, ``cluster_id``). UUIDs come back in whatever form the column
holds them (CHAR(32) hex from SQLAlchemy's ``Uuid`` on SQLite, native ``uuid`` on
PostgreSQL, 16-byte blobs, or dashed strings); they are normalised to 16 raw bytes in bulk.

The source is never written: SQLite is opened with ``mode=ro``, PostgreSQL with
``default_transaction_read_only``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Date, DateTime, MetaData, String, Table, func, inspect, select, type_coerce
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from clusterstore.eventstore import schema
from clusterstore.eventstore.backends import backend_for
from clusterstore.eventstore.config import resolve_url
from clusterstore.eventstore.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    EventStoreError,
    LegacyRowError,
)

RESULTS = "clusteringresult"
ROWS = "embeddingcluster"
ROW_COLUMNS = ("id", "embedding_id", "clustering_result_id", "cluster_id")
CHUNK = 100_000

# Column names users give these facts, most likely first.
MODEL_COLUMNS = ("model", "model_name", "embedding_model", "embedding_model_name", "embedder")
ALGORITHM_COLUMNS = ("algorithm", "algorithm_name", "method", "clustering_algorithm")
PARAMS_COLUMNS = ("params", "parameters", "config", "settings", "hyperparameters")
STARTED_COLUMNS = ("started_at", "created_at", "created", "timestamp", "run_at")
FINISHED_COLUMNS = ("finished_at", "completed_at", "ended_at", "updated_at")
COUNT_COLUMNS = ("n_embeddings", "num_embeddings", "n_samples", "n_rows", "n_points", "size")
STATUS_COLUMNS = ("status", "state")


class LegacySourceError(ConfigurationError):
    """The legacy database is missing, unreadable, or lacks the legacy tables."""


class LegacyImportConflictError(EventStoreError):
    """A legacy result id is already used by a run that is not its import."""


@dataclass(frozen=True)
class LegacyResult:
    """One row of ``clusteringresult`` with the facts detected in its columns."""

    id: uuid.UUID
    model: str
    algorithm: str
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    declared_rows: int | None = None  # a count column, when the legacy model had one
    status: str | None = None  # a status column, when the legacy model had one
    extra: dict[str, Any] = field(default_factory=dict)


def to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes | bytearray | memoryview) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    return uuid.UUID(str(value))


def uuid_column_bytes(values: Sequence[Any]) -> npt.NDArray[np.void]:
    """A column of UUIDs in any stored form as a (n,) array of 16-byte values; ValueError
    (or TypeError) for a value that is not one (``checked_uuids`` says which)."""
    if not values:
        return np.empty(0, dtype="V16")
    first = values[0]
    if isinstance(first, str) and all(
        isinstance(v, str) and len(v) - v.count("-") == 32 for v in values
    ):
        joined = "".join(values).replace("-", "")
        return np.frombuffer(bytes.fromhex(joined), dtype="V16")
    if isinstance(first, uuid.UUID):
        return np.frombuffer(b"".join(v.bytes for v in values), dtype="V16")
    return np.frombuffer(b"".join(to_uuid(v).bytes for v in values), dtype="V16")


_NOT_UUID = (ValueError, TypeError, AttributeError)


def uuid_problem(value: Any) -> str | None:
    """Why ``value`` is not a UUID (None: it is one)."""
    if value is None:
        return "is NULL"
    try:
        to_uuid(value)
    except _NOT_UUID:
        return f"is not a UUID ({_shown(value)})"
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "NULL"
    text = repr(bytes(value) if isinstance(value, memoryview) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def checked_uuids(
    values: Sequence[Any], table: str, column: str, row: Callable[[int], str], consequence: str
) -> npt.NDArray[np.void]:
    """``uuid_column_bytes``, or ``LegacyRowError`` naming the first value that is not a
    UUID (``row(i)`` says where the i-th value is)."""
    try:
        return uuid_column_bytes(values)
    except _NOT_UUID:
        pass
    for i, value in enumerate(values):
        problem = uuid_problem(value)
        if problem is not None:
            raise LegacyRowError(table, row(i), column, problem, consequence)
    raise AssertionError("uuid_column_bytes refused a column of valid UUIDs")


def _uuid7_time(u: uuid.UUID) -> datetime | None:
    if u.version != 7:
        return None
    return datetime.fromtimestamp((u.int >> 80) / 1000, tz=UTC)


def _as_datetime(value: Any) -> datetime | None:
    """A stored timestamp (a datetime, ISO text, or Unix seconds); None if it is none."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return _as_datetime(datetime.fromisoformat(value))
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _pick(row: dict[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


class LegacySource:
    """An open, read-only legacy database."""

    def __init__(self, location: str | os.PathLike[str]):
        url = self._url(location)
        backend = backend_for(url)
        self.display = backend.display_of(url)
        self.engine = backend.read_only_engine(url)
        try:
            if inspect(self.engine).has_table(schema.meta.name):
                raise LegacySourceError(
                    f"{self.display} is a clusterstore store (its {ROWS!r} and {RESULTS!r} "
                    "are read-model views), not a legacy database"
                )
            meta = MetaData()
            self.results = Table(RESULTS, meta, autoload_with=self.engine)
            self.rows = Table(ROWS, meta, autoload_with=self.engine)
        except sa_exc.NoSuchTableError as e:
            self.engine.dispose()
            raise LegacySourceError(
                f"{self.display} has no table {e.args[0]!r}; a legacy database has the "
                f"tables {RESULTS!r} and {ROWS!r}"
            ) from e
        except LegacySourceError:
            self.engine.dispose()
            raise
        except sa_exc.DBAPIError as e:
            self.engine.dispose()
            raise DatabaseUnavailableError(
                f"cannot read the legacy database {self.display}: {str(e.orig).strip()}"
            ) from e
        missing = [c for c in ROW_COLUMNS if c not in self.rows.c]
        if missing or "id" not in self.results.c:
            self.engine.dispose()
            raise LegacySourceError(
                f"{self.display}: table {ROWS!r} lacks the columns {missing or ['id']}; "
                "this is not a legacy clusterstore/SQLModel database"
            )

    @staticmethod
    def _url(location: str | os.PathLike[str]) -> URL:
        text = os.fspath(location)
        if "://" not in text:
            path = Path(text).expanduser()
            if not path.is_file():
                raise LegacySourceError(f"legacy database {path} does not exist")
        return resolve_url(text)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LegacySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, stmt: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).all()
        except sa_exc.DBAPIError as e:
            raise EventStoreError(
                f"reading the legacy database {self.display} failed: "
                f"{str(e.orig).strip().splitlines()[0]}"
            ) from e

    def list_results(self) -> list[LegacyResult]:
        """Every legacy clustering result, in id order (UUIDv7 ids: creation order).
        ``LegacyRowError`` for a row whose id is not a UUID or whose dates do not parse
        (dates are read as the database stores them, so a malformed one is named)."""
        columns = [  # no CAST: only SQLAlchemy's own parsing of date text is switched off
            type_coerce(c, String).label(c.name) if isinstance(c.type, DateTime | Date) else c
            for c in self.results.c
        ]
        rows = self._run(select(*columns).order_by(self.results.c.id))
        out = [self._result(dict(r._mapping), i + 1) for i, r in enumerate(rows)]
        return sorted(out, key=lambda r: r.id.bytes)

    def _result(self, row: dict[str, Any], number: int) -> LegacyResult:
        raw_id = row.pop("id")
        where = f"row {number} in id order (id {_shown(raw_id)})"
        nothing = "nothing was imported"
        problem = uuid_problem(raw_id)
        if problem is not None:
            raise LegacyRowError(RESULTS, where, "id", problem, nothing)
        rid = to_uuid(raw_id)
        used: set[str] = set()

        def pick(names: Sequence[str]) -> Any:
            name, value = _pick(row, names)
            used.add(name or "")
            if name in STARTED_COLUMNS + FINISHED_COLUMNS and _as_datetime(value) is None:
                raise LegacyRowError(
                    RESULTS, where, str(name), f"is not a date ({_shown(value)})", nothing
                )
            return value

        model, algorithm, params = (
            pick(c) for c in (MODEL_COLUMNS, ALGORITHM_COLUMNS, PARAMS_COLUMNS)
        )
        started, finished = pick(STARTED_COLUMNS), pick(FINISHED_COLUMNS)
        declared, status = pick(COUNT_COLUMNS), pick(STATUS_COLUMNS)
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError:
                params = {"raw": params}
        extra = {k: _jsonable(v) for k, v in row.items() if k not in used and v is not None}
        started_at = _as_datetime(started) or _uuid7_time(rid) or datetime(1970, 1, 1, tzinfo=UTC)
        return LegacyResult(
            id=rid,
            model=str(model) if model is not None else "unknown",
            algorithm=str(algorithm) if algorithm is not None else "legacy",
            params=_jsonable(params) if isinstance(params, dict) else {},
            started_at=started_at,
            finished_at=_as_datetime(finished),
            declared_rows=int(declared) if isinstance(declared, int | float) else None,
            status=str(status) if status is not None else None,
            extra=extra,
        )

    def _bind(self, result_id: uuid.UUID) -> Any:
        """The result id in the form the column stores it (for the WHERE clause)."""
        sample = self._run(select(self.rows.c.clustering_result_id).limit(1))
        if sample and isinstance(sample[0][0], str):
            form = sample[0][0]
            return str(result_id) if "-" in form else result_id.hex
        if sample and isinstance(sample[0][0], bytes | bytearray | memoryview):
            return result_id.bytes
        return result_id

    def result_stats(self, result_id: uuid.UUID) -> tuple[int, list[uuid.UUID]]:
        """(row count, distinct cluster ids sorted by their bytes) for one result."""
        c = self.rows.c
        key = self._bind(result_id)
        count = self._run(select(func.count()).where(c.clustering_result_id == key))[0][0]
        clusters = self._run(select(c.cluster_id).where(c.clustering_result_id == key).distinct())
        # a value that is not a UUID is left out here: ``check_rows`` names its row
        valid = (to_uuid(r[0]) for r in clusters if uuid_problem(r[0]) is None)
        return int(count), sorted(valid, key=lambda u: u.bytes)

    def check_rows(self, result_id: uuid.UUID, chunk: int = CHUNK) -> int:
        """Read every row of one result and check its ids (``LegacyRowError`` naming the
        first bad row); returns the row count. Writes nothing: the importer calls it
        before it writes anything of the result."""
        return sum(len(part[0]) for part in self.iter_rows(result_id, chunk))

    def iter_rows(
        self, result_id: uuid.UUID, chunk: int = CHUNK
    ) -> Iterator[tuple[npt.NDArray[np.void], npt.NDArray[np.void], npt.NDArray[np.void]]]:
        """(row ids, embedding ids, cluster ids) in row-id order, ``chunk`` rows at a time,
        over one server-side cursor: memory stays bounded whatever the table size."""
        c = self.rows.c
        stmt = (
            select(c.id, c.embedding_id, c.cluster_id)
            .where(c.clustering_result_id == self._bind(result_id))
            .order_by(c.id)
        )
        consequence = f"nothing of legacy result {result_id} was written"
        done = 0

        def row(ids: Sequence[Any]) -> Callable[[int], str]:
            return lambda i: (
                f"row {done + i + 1} of result {result_id} in id order (id {_shown(ids[i])})"
            )

        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
                for part in result.partitions(chunk):
                    ids, emb, clu = zip(*part, strict=True)
                    where = row(ids)
                    yield (
                        checked_uuids(ids, ROWS, "id", where, consequence),
                        checked_uuids(emb, ROWS, "embedding_id", where, consequence),
                        checked_uuids(clu, ROWS, "cluster_id", where, consequence),
                    )
                    done += len(ids)
        except sa_exc.DBAPIError as e:
            raise EventStoreError(
                f"reading the legacy database {self.display} failed: "
                f"{str(e.orig).strip().splitlines()[0]}"
            ) from e

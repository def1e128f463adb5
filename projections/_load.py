"""Loading a batch of assignment rows into ``pj_ec_assignment_g<N>``: the hot path.

Rows are columns of numpy arrays, sorted by the table's key (run_key, seq), so the B-tree
only ever appends within a run. No Python object is made per row:

- SQLite: one ``INSERT ... SELECT`` per batch over ``json_each`` of the distances, the
  other columns cut with ``substr`` from blobs numpy builds in bulk (fixed-width decimal
  digits for the integers, the 16-byte ids back to back). ``substr`` on a BLOB is O(1) (on
  TEXT it would scan), ``CAST`` of a digit blob is an integer, and the JSON float text
  round-trips every float32 exactly (NaN, an imported run's unknown distance, is null).
- PostgreSQL: one binary ``COPY`` stream per batch, fixed-width tuples built with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Table

from clusterstore.eventstore.codec import labels_of


@dataclass(frozen=True)
class Rows:
    run_key: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    embedding_id: npt.NDArray[np.void]  # V16
    cluster: npt.NDArray[np.int64]  # -1 for noise
    distance: npt.NDArray[np.float32]
    legacy_id: npt.NDArray[np.void]  # V16: an imported assignment's legacy row id
    has_legacy: npt.NDArray[np.bool_]  # whether ``legacy_id`` is set (else NULL)

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @classmethod
    def of(cls, run_key: int, seqs: npt.NDArray[np.int64], rec: npt.NDArray[np.void]) -> Rows:
        """Rows of one run from ``codec.unpack_assignments`` records at ``seqs`` (records of
        the 47-byte layout carry a ``legacy_id``)."""
        n = seqs.shape[0]
        legacy = "legacy_id" in (rec.dtype.names or ())
        return cls(
            np.full(n, run_key, dtype=np.int64),
            seqs.astype(np.int64, copy=False),
            rec["embedding_id"],
            labels_of(rec),  # -1 for noise
            rec["distance"].astype(np.float32),
            rec["legacy_id"] if legacy else np.zeros(n, dtype="V16"),
            np.full(n, legacy, dtype=np.bool_),
        )

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """All parts, sorted by (run_key, seq)."""
        if len(parts) == 1:
            rows = parts[0]
        else:
            rows = cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))
        step = np.diff(rows.run_key)
        if ((step > 0) | ((step == 0) & (np.diff(rows.seq) > 0))).all():
            return rows
        return rows.take(np.lexsort((rows.seq, rows.run_key)))

    def take(self, index: npt.NDArray[Any]) -> Rows:
        return Rows(*(getattr(self, f)[index] for f in _FIELDS))


_FIELDS = ("run_key", "seq", "embedding_id", "cluster", "distance", "legacy_id", "has_legacy")
_COLUMNS = _FIELDS[:6]  # the table's columns, in this order


def insert_rows(conn: Connection, dialect: str, table: Table, rows: Rows) -> None:
    if dialect == "postgresql":
        _copy_rows(conn, table, rows)
    else:
        _insert_sqlite(conn, table, rows)


# ---------------------------------------------------------------------------- SQLite

_POW10 = 10 ** np.arange(18, -1, -1, dtype=np.uint64)  # 19 digits hold any value < 2**63

_SQLITE_INSERT = """
INSERT INTO {table} (run_key, seq, embedding_id, cluster, distance, legacy_id)
SELECT {run_key}, {seq}, substr(:ids, key * 16 + 1, 16), {cluster}, value, {legacy}
FROM json_each(:distances)
"""


def _digits(values: npt.NDArray[Any], width: int) -> npt.NDArray[np.uint8]:
    """(n, width) ASCII digits of non-negative integers, zero-padded."""
    v = values.astype(np.uint64)[:, None]
    return ((v // _POW10[-width:]) % np.uint64(10) + np.uint64(48)).astype(np.uint8)


def _width(values: npt.NDArray[Any]) -> int:
    return len(str(int(values.max()))) if len(values) else 1


def _insert_sqlite(conn: Connection, table: Table, rows: Rows) -> None:
    """The integer columns go as one blob of fixed-width decimal digits per row, each as
    wide as the batch's largest value needs. Digits are non-negative: the cluster goes as
    ``cluster + 1`` (noise, -1, as 0) and the SQL takes the 1 off again."""
    legacy = bool(rows.has_legacy.any())
    columns = [("run_key", rows.run_key), ("seq", rows.seq), ("cluster", rows.cluster + 1)]
    if legacy:
        columns.append(("flag", rows.has_legacy.astype(np.int64)))
    widths = [_width(values) for _, values in columns]
    record = sum(widths)
    nums = np.hstack([_digits(values, w) for (_, values), w in zip(columns, widths, strict=True)])
    cut: dict[str, str] = {}
    offset = 1
    for (name, _), w in zip(columns, widths, strict=True):
        cut[name] = f"CAST(substr(:nums, key * {record} + {offset}, {w}) AS INTEGER)"
        offset += w
    cut["cluster"] += " - 1"
    cut["legacy"] = (
        f"CASE WHEN {cut.pop('flag')} = 1 THEN substr(:legacy, key * 16 + 1, 16) END"
        if legacy
        else "NULL"
    )
    params = {
        "nums": nums.tobytes(),
        "ids": rows.embedding_id.tobytes(),
        "distances": msgspec.json.encode(rows.distance.astype(np.float64).tolist()),
    }
    if legacy:
        params["legacy"] = rows.legacy_id.tobytes()
    conn.exec_driver_sql(_SQLITE_INSERT.format(table=table.name, **cut), params)


# ---------------------------------------------------------------------------- PostgreSQL

_COPY_FIELDS: list[tuple[str, str]] = [
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
_COPY_DTYPE = np.dtype(_COPY_FIELDS)
_COPY_LEGACY_DTYPE = np.dtype([*_COPY_FIELDS, ("legacy_id", "V16")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def copy_stream(rows: Rows) -> bytes:
    """The binary COPY stream of ``rows`` for ``_COLUMNS`` (rows without a legacy id first)."""
    if not rows.has_legacy.any():
        return _COPY_HEADER + _tuples(rows, _COPY_DTYPE) + _COPY_TRAILER
    plain = _tuples(rows.take(~rows.has_legacy), _COPY_DTYPE)
    legacy = _tuples(rows.take(rows.has_legacy), _COPY_LEGACY_DTYPE)
    return _COPY_HEADER + plain + legacy + _COPY_TRAILER


def _tuples(rows: Rows, dtype: np.dtype[Any]) -> bytes:
    out = np.empty(len(rows), dtype=dtype)
    out["nfields"] = len(_COLUMNS)
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
    if dtype is _COPY_LEGACY_DTYPE:
        out["legacy_len"] = 16
        out["legacy_id"] = rows.legacy_id
    else:
        out["legacy_len"] = -1
    return out.tobytes()


def _copy_rows(conn: Connection, table: Table, rows: Rows) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = f"COPY {table.name} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cur, cur.copy(sql) as copy:
        copy.write(copy_stream(rows))

"""Loading a batch of assignment rows into ``pj_ec_assignment_g<N>``: the hot path.

Rows are columns of numpy arrays, sorted by the table's key (run_key, seq), so the B-tree
only ever appends within a run. No Python object is made per row:

- SQLite: one ``INSERT ... SELECT`` per batch over ``json_each`` of the distances, the
  other columns cut with ``substr`` from two blobs numpy builds in bulk (fixed-width
  decimal digits for the integers, the 16-byte ids back to back). ``substr`` on a BLOB is
  O(1) (on TEXT it would scan), ``CAST`` of a digit blob is an integer, and the JSON
  float text round-trips every float32 exactly.
- PostgreSQL: one binary ``COPY`` stream per batch, fixed-width tuples built with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Table

_POW10 = 10 ** np.arange(18, -1, -1, dtype=np.uint64)  # 19 digits hold any seq < 2**63


@dataclass(frozen=True)
class Rows:
    run_key: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    embedding_id: npt.NDArray[np.void]  # V16
    cluster: npt.NDArray[np.int64]
    distance: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @classmethod
    def of(cls, run_key: int, seqs: npt.NDArray[np.int64], rec: npt.NDArray[np.void]) -> Rows:
        """Rows of one run from ``codec.unpack_assignments`` records at ``seqs``."""
        return cls(
            np.full(seqs.shape[0], run_key, dtype=np.int64),
            seqs.astype(np.int64, copy=False),
            rec["embedding_id"],
            rec["cluster"].astype(np.int64),
            rec["distance"].astype(np.float32),
        )

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """All parts, sorted by (run_key, seq)."""
        if len(parts) == 1:
            rows = parts[0]
        else:
            rows = cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))
        key_order = (np.diff(rows.run_key) > 0) | (
            (np.diff(rows.run_key) == 0) & (np.diff(rows.seq) > 0)
        )
        if key_order.all():
            return rows
        order = np.lexsort((rows.seq, rows.run_key))
        return cls(*(getattr(rows, f)[order] for f in _FIELDS))


_FIELDS = ("run_key", "seq", "embedding_id", "cluster", "distance")


def insert_rows(conn: Connection, dialect: str, table: Table, rows: Rows) -> None:
    if dialect == "postgresql":
        _copy_rows(conn, table, rows)
    else:
        _insert_sqlite(conn, table, rows)


# ---------------------------------------------------------------------------- SQLite

_NUM_WIDTH = 10 + 19 + 10  # run_key, seq, cluster as fixed-width decimal digits

_SQLITE_INSERT = """
INSERT INTO {table} (run_key, seq, embedding_id, cluster, distance)
SELECT CAST(substr(:nums, key * 39 + 1, 10) AS INTEGER),
       CAST(substr(:nums, key * 39 + 11, 19) AS INTEGER),
       substr(:ids, key * 16 + 1, 16),
       CAST(substr(:nums, key * 39 + 30, 10) AS INTEGER),
       value
FROM json_each(:distances)
"""


def _digits(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """(n, width) ASCII digits of non-negative integers, zero-padded."""
    v = values.astype(np.uint64)[:, None]
    return ((v // _POW10[-width:]) % np.uint64(10) + np.uint64(48)).astype(np.uint8)


def _insert_sqlite(conn: Connection, table: Table, rows: Rows) -> None:
    nums = np.hstack([_digits(rows.run_key, 10), _digits(rows.seq, 19), _digits(rows.cluster, 10)])
    assert nums.shape[1] == _NUM_WIDTH
    conn.exec_driver_sql(
        _SQLITE_INSERT.format(table=table.name),
        {
            "nums": nums.tobytes(),
            "ids": rows.embedding_id.tobytes(),
            "distances": msgspec.json.encode(rows.distance.astype(np.float64).tolist()),
        },
    )


# ---------------------------------------------------------------------------- PostgreSQL

_COPY_DTYPE = np.dtype(
    [
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
    ]
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def copy_stream(rows: Rows) -> bytes:
    """The binary COPY stream of ``rows`` for (run_key, seq, embedding_id, cluster, distance)."""
    out = np.empty(len(rows), dtype=_COPY_DTYPE)
    out["nfields"] = 5
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
    return _COPY_HEADER + out.tobytes() + _COPY_TRAILER


def _copy_rows(conn: Connection, table: Table, rows: Rows) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = f"COPY {table.name} ({', '.join(_FIELDS)}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cur, cur.copy(sql) as copy:
        copy.write(copy_stream(rows))

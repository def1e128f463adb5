"""The backends' bulk read of read-model assignment rows (``read_assignment_rows``): what
``insert_assignment_rows`` wrote comes back column for column, in seq order, page by page
(noise, NULL distances, kept legacy ids and rows of another run included)."""

from __future__ import annotations

import numpy as np

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.rows import FIELDS, AssignmentRows
from clusterstore.projections.schema import ec_tables


def _rows(run_key: int, n: int) -> AssignmentRows:
    rng = np.random.default_rng(run_key)
    legacy = rng.integers(0, 256, (n, 16), dtype=np.uint8).view("V16").reshape(-1)
    has_legacy = np.arange(n) % 3 == 0
    legacy[~has_legacy] = np.zeros(1, "V16")[0]
    distances = rng.random(n, dtype=np.float32)
    distances[::5] = np.nan  # stored as NULL, read back as NaN
    return AssignmentRows(
        np.full(n, run_key, dtype=np.int64),
        np.arange(1, n + 1, dtype=np.int64) * 2,  # not contiguous
        rng.integers(0, 256, (n, 16), dtype=np.uint8).view("V16").reshape(-1),
        np.where(np.arange(n) % 7 == 0, -1, rng.integers(0, 100, n)).astype(np.int64),
        distances,
        legacy,
        has_legacy,
    )


def test_rows_read_back_as_written(store: EventStore) -> None:
    table = ec_tables(990).assignments
    mine, other = _rows(1, 250), _rows(2, 40)
    with store.transaction() as conn:
        table.create(conn)
        store.insert_assignment_rows(conn, table, AssignmentRows.concat([mine, other]))
    pages, after = [], -1
    while True:
        with store.transaction() as conn:
            page = store.read_assignment_rows(conn, table, 1, after=after, limit=100)
        if not len(page):
            break
        pages.append(page)
        after = int(page.seq[-1])
    assert [len(p) for p in pages] == [100, 100, 50]
    got = AssignmentRows.concat(pages)
    for field in FIELDS:
        want, have = getattr(mine, field), getattr(got, field)
        assert have.dtype == want.dtype, field
        if field == "distance":
            np.testing.assert_array_equal(have, want)  # NaN where NaN
        else:
            assert (have == want).all(), field


def test_a_bounded_range_reads_only_its_rows(store: EventStore) -> None:
    """``until`` bounds the range: (after, until], still at most ``limit`` rows."""
    table = ec_tables(991).assignments
    mine = _rows(1, 250)  # seqs 2, 4, ..., 500
    with store.transaction() as conn:
        table.create(conn)
        store.insert_assignment_rows(conn, table, AssignmentRows.concat([mine, _rows(2, 40)]))
    with store.transaction() as conn:
        ranged = store.read_assignment_rows(conn, table, 1, after=10, until=21, limit=100)
        capped = store.read_assignment_rows(conn, table, 1, after=10, until=400, limit=3)
        empty = store.read_assignment_rows(conn, table, 1, after=500, until=900, limit=100)
    assert ranged.seq.tolist() == [12, 14, 16, 18, 20]
    assert (ranged.embedding_id == mine.embedding_id[5:10]).all()
    assert ranged.cluster.tolist() == mine.cluster[5:10].tolist()
    assert capped.seq.tolist() == [12, 14, 16]
    assert len(empty) == 0 and empty.seq.dtype == np.int64

"""A run's block reads hand the assignments over in seq order whatever order the database's
scan delivers them in (PostgreSQL concatenates them unordered, each with its seq, and the
reader sorts: ``Recorder.concat_payloads_with_seqs_sql``; the read model's rows likewise),
and a block that mixes the 29- and 47-byte layouts still comes in seq order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from clusterstore.audit._log import assignment_blocks
from clusterstore.eventstore import EventStore, log_reads, pack_assignments
from clusterstore.eventstore.events import AssignmentRecorded
from clusterstore.eventstore.log_reads import in_seq_order
from clusterstore.eventstore.rows import FIELDS, AssignmentRows
from clusterstore.eventstore.schema import commits, events, runs
from clusterstore.projections.schema import ec_tables

N = 500


def store_backwards(store: EventStore, payloads: list[bytes], *, analyze: bool = True) -> uuid.UUID:
    """A run whose assignments (seqs 1..n), one commit, are written to the table in
    descending seq order (on PostgreSQL the heap then holds them backwards; with fresh
    statistics (``analyze``) saying the run is the whole table, a sequential scan returns
    them so, without, a bitmap scan does)."""
    run = uuid.uuid4()
    rows = [
        {
            "run_id": run,
            "seq": seq,
            "type": AssignmentRecorded.TYPE,
            "version": AssignmentRecorded.VERSION,
            "payload": payloads[seq - 1],
        }
        for seq in range(len(payloads), 0, -1)
    ]
    now = datetime.now(UTC)
    with store.transaction(write=True) as conn:
        conn.execute(runs.insert().values(run_id=run, created_at=now))
        conn.execute(events.insert(), rows)
        conn.execute(
            commits.insert().values(
                position=1, run_id=run, first_seq=1, count=len(payloads), committed_at=now
            )
        )
    if analyze:
        with store.transaction(write=True) as conn:
            store.analyze_table(conn, events.name)
    return run


def _packed(n: int, *, legacy: bool = False) -> list[bytes]:
    rng = np.random.default_rng(5)
    extra = {"legacy_ids": rng.integers(0, 256, (n, 16), dtype=np.uint8)} if legacy else {}
    packed = pack_assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8),
        rng.integers(0, 50, n),
        rng.random(n, dtype=np.float32),
        **extra,
    )
    return [packed.payload(i) for i in range(n)]


def test_records_are_put_in_seq_order() -> None:
    payloads = [bytes([i]) * 3 for i in range(6)]
    seqs = [40, 2, 9, 7, 3, 5]
    data = b"".join(p + s.to_bytes(8, "big") for p, s in zip(payloads, seqs, strict=True))
    assert in_seq_order(data, 3) == b"".join(payloads[i] for i in np.argsort(seqs))
    ordered = sorted(zip(seqs, payloads, strict=True))
    data = b"".join(p + s.to_bytes(8, "big") for s, p in ordered)
    assert in_seq_order(data, 3) == b"".join(p for _, p in ordered)


def test_a_run_stored_out_of_seq_order_is_read_in_seq_order(store: EventStore) -> None:
    payloads = _packed(N)
    run = store_backwards(store, payloads)
    block = store.read_stream_block(run, after=0, until=N)
    assert (block.n_rows, block.seq_range, block.n_fixed) == (N, (1, N), N)
    assert block.assignments == b"".join(payloads)
    part = store.read_stream_block(run, after=100, until=250)
    assert part.assignments == b"".join(payloads[100:250])
    blocks = list(assignment_blocks(store, run, page_size=100))
    assert np.concatenate([b.seqs for b in blocks]).tolist() == list(range(1, N + 1))
    assert b"".join(b.records.tobytes() for b in blocks) == b"".join(payloads)


def test_a_block_of_both_layouts_is_read_in_seq_order(store: EventStore) -> None:
    """29- and 47-byte assignments in one block (never written by clusterstore): the block
    says so by its widths and still holds the payloads in seq order."""
    short, long = _packed(N), _packed(N, legacy=True)
    payloads = [long[i] if i % 4 == 0 else short[i] for i in range(N)]
    run = store_backwards(store, payloads)
    block = store.read_stream_block(run, after=0, until=N)
    assert block.widths == (len(short[0]), len(long[0]))
    assert block.assignments == b"".join(payloads)


def test_read_model_rows_stored_out_of_seq_order_are_read_in_seq_order(
    store: EventStore,
) -> None:
    rng = np.random.default_rng(8)
    n = 300
    has_legacy = np.arange(n) % 4 == 1
    legacy = rng.integers(0, 256, (n, 16), dtype=np.uint8).view("V16").reshape(-1)
    legacy[~has_legacy] = np.zeros(1, "V16")[0]
    rows = AssignmentRows(
        np.full(n, 1, dtype=np.int64),
        np.arange(1, n + 1, dtype=np.int64),
        rng.integers(0, 256, (n, 16), dtype=np.uint8).view("V16").reshape(-1),
        rng.integers(-1, 100, n).astype(np.int64),
        rng.random(n, dtype=np.float32),
        legacy,
        has_legacy,
    )
    table = ec_tables(992).assignments
    with store.transaction() as conn:
        table.create(conn)
        store.insert_assignment_rows(conn, table, rows.take(np.arange(n)[::-1]))
        store.analyze_table(conn, table.name)
    with store.transaction() as conn:
        got = store.read_assignment_rows(conn, table, 1, after=0, until=n, limit=n)
        capped = store.read_assignment_rows(conn, table, 1, after=10, limit=50)
    for field in FIELDS:
        assert (getattr(got, field) == getattr(rows, field)).all(), field
        assert (getattr(capped, field) == getattr(rows, field)[10:60]).all(), field


def test_events_at_keys(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point reads by (run_id, seq): the events at the keys that exist, across chunks of
    keys (each backend's way of passing them), none for a missing key."""
    monkeypatch.setattr(log_reads, "_KEY_CHUNK", 7)
    monkeypatch.setattr(log_reads, "_ARRAY_CHUNK", 7)
    payloads = _packed(40)
    run = store_backwards(store, payloads)
    keys = [(run, s) for s in (40, 3, 1, 17, 0, 41, 2**62, *range(20, 31))]
    keys.append((uuid.uuid4(), 1))
    found = store.read_events_at(keys)
    want = {(run, s) for s in (40, 3, 1, 17, *range(20, 31))}
    assert set(found) == want
    for (r, s), ev in found.items():
        assert (ev.run_id, ev.seq, ev.type) == (r, s, AssignmentRecorded.TYPE)
        assert ev.payload == payloads[s - 1]

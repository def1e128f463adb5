"""The feed hands a commit's assignment payloads over in seq order whatever order the
database's scan delivers them in (PostgreSQL concatenates them unordered, with the seqs, and
the feed sorts: ``Recorder.concat_payloads_with_offsets_sql``)."""

from __future__ import annotations

import numpy as np

from clusterstore.eventstore import EventStore, pack_assignments
from clusterstore.eventstore.feed import _in_seq_order
from tests.test_block_order import store_backwards


def test_records_are_put_in_seq_order() -> None:
    payloads = [bytes([i]) * 3 for i in range(6)]
    offsets = [4, 2, 9, 7, 3, 5]
    data = b"".join(p + o.to_bytes(4, "big") for p, o in zip(payloads, offsets, strict=True))
    want = b"".join(payloads[i] for i in np.argsort(offsets))
    assert _in_seq_order(data, 3) == want
    ordered = sorted(zip(offsets, payloads, strict=True))
    data = b"".join(p + o.to_bytes(4, "big") for o, p in ordered)
    assert _in_seq_order(data, 3) == b"".join(p for _, p in ordered)
    assert _in_seq_order(data[:-1], 3) == b""  # not whole records: the caller reports it


def test_a_commit_stored_out_of_seq_order_is_read_in_seq_order(store: EventStore) -> None:
    """The rows of one commit written to the table in descending seq order (on PostgreSQL
    the heap then holds them backwards, and a bitmap scan returns them so): the block's
    payloads still come in seq order."""
    n = 500
    rng = np.random.default_rng(3)
    packed = pack_assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8),
        rng.integers(0, 50, n),
        rng.random(n, dtype=np.float32),
    )
    store_backwards(store, [packed.payload(i) for i in range(n)], analyze=False)
    blocks = store.read_feed_blocks(after=0, max_events=10_000)
    assert [(b.first_seq, b.last_seq) for b in blocks] == [(1, n)]
    assert blocks[0].assignments == packed.data
    part = store.read_feed_blocks(after=100, max_events=150)
    assert part[0].assignments == packed.data[100 * packed.width : 250 * packed.width]

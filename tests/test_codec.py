"""Encoding round trips for every event type (no database involved)."""

from __future__ import annotations

import struct
import uuid

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterstore.eventstore import (
    AssignmentRecorded,
    Event,
    EventDecodeError,
    FutureEventVersionError,
    InputError,
    RunStarted,
    UnknownEventTypeError,
    pack_assignments,
    unpack_assignments,
)
from clusterstore.eventstore.codec import ASSIGNMENT_WIDTH, decode, encode, is_canonical_assignment
from clusterstore.eventstore.events import EVENT_TYPES
from tests.contracts.support import ANY_EVENT, CLUSTERS, FLOAT32, STRATEGIES, started


def test_every_event_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(EVENT_TYPES)


@settings(max_examples=300, deadline=None)
@given(ANY_EVENT)
def test_encode_decode_round_trip(event: Event) -> None:
    raw = encode(event)
    assert (raw.type, raw.version) == (type(event).TYPE, type(event).VERSION)
    assert decode(raw.type, raw.version, raw.payload) == event
    assert encode(decode(*raw)) == raw  # encoding is deterministic: re-sends are identical


@settings(deadline=None)
@given(st.uuids(), CLUSTERS, FLOAT32)
def test_assignment_has_the_canonical_29_byte_layout(
    embedding_id: uuid.UUID, cluster: int, distance: float
) -> None:
    raw = encode(AssignmentRecorded(embedding_id=embedding_id, cluster=cluster, distance=distance))
    expected = (
        b"\x93\xc4\x10"
        + embedding_id.bytes
        + b"\xce"
        + struct.pack(">I", cluster)
        + b"\xca"
        + struct.pack(">f", distance)
    )
    assert raw.payload == expected
    assert is_canonical_assignment(raw.payload)
    # msgspec's own (float64) encoding of the same event decodes to the same event
    generic = msgspec.msgpack.Encoder(uuid_format="bytes").encode(
        AssignmentRecorded(embedding_id=embedding_id, cluster=cluster, distance=distance)
    )
    assert decode(raw.type, raw.version, generic) == decode(*raw)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.uuids(), CLUSTERS, FLOAT32), max_size=50),
)
def test_packed_batch_equals_events_encoded_one_by_one(
    rows: list[tuple[uuid.UUID, int, float]],
) -> None:
    ids = np.array([u for u, _, _ in rows], dtype=object)
    packed = pack_assignments(
        ids if rows else np.zeros((0, 16), np.uint8),
        np.array([c for _, c, _ in rows], dtype=np.uint64),
        np.array([d for _, _, d in rows], dtype=np.float32),
    )
    assert packed.count == len(rows)
    singles = [
        encode(AssignmentRecorded(embedding_id=u, cluster=c, distance=d)) for u, c, d in rows
    ]
    assert packed.raw() == singles
    rec = unpack_assignments(packed.data)
    assert [bytes(x) for x in rec["embedding_id"]] == [u.bytes for u, _, _ in rows]
    assert rec["cluster"].tolist() == [c for _, c, _ in rows]
    assert rec["distance"].astype(np.float64).tolist() == [d for _, _, d in rows]


def test_pack_rejects_bad_input() -> None:
    ids = np.zeros((2, 16), np.uint8)
    with pytest.raises(InputError, match="same length"):
        pack_assignments(ids, [0], [0.0, 1.0])
    with pytest.raises(InputError, match="between 0 and 2\\*\\*32-1, or -1 for noise"):
        pack_assignments(ids, [0, -2], [0.0, 1.0])  # -1 is noise (tests/test_noise.py)
    with pytest.raises(InputError, match="between 0 and 2\\*\\*32-1"):
        pack_assignments(ids, [0, 2**32], [0.0, 1.0])
    with pytest.raises(InputError, match="16-byte UUIDs"):
        pack_assignments(np.zeros((2, 8), np.uint8), [0, 1], [0.0, 1.0])


def test_unpack_rejects_non_canonical_blocks() -> None:
    good = pack_assignments(np.zeros((2, 16), np.uint8), [0, 1], [0.0, 1.0]).data
    with pytest.raises(EventDecodeError, match="whole number"):
        unpack_assignments(good[:-1])
    bad = bytearray(good)
    bad[ASSIGNMENT_WIDTH + 19] = 0xCD  # second record's cluster as uint16 marker
    with pytest.raises(EventDecodeError, match="record 1 is not in canonical layout"):
        unpack_assignments(bytes(bad))


def test_decode_errors_name_the_run_and_seq() -> None:
    run = uuid.uuid4()
    raw = encode(started())
    with pytest.raises(UnknownEventTypeError, match=f"run {run} seq 7: unknown event type code 99"):
        decode(99, 1, raw.payload, run_id=run, seq=7)
    with pytest.raises(FutureEventVersionError, match="RunStarted has schema version 2"):
        decode(RunStarted.TYPE, 2, raw.payload, run_id=run, seq=1)
    with pytest.raises(EventDecodeError, match=f"run {run} seq 3: RunStarted payload"):
        decode(RunStarted.TYPE, 1, b"\xc1garbage", run_id=run, seq=3)
    with pytest.raises(EventDecodeError, match="AssignmentRecorded payload does not decode"):
        decode(AssignmentRecorded.TYPE, 1, raw.payload)

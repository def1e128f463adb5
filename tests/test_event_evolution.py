"""The log must outlive its code: the committed v1 fixture stays readable, upcasters run
in a chain, added fields need no upcaster, and what this code cannot read is a clear error
naming the run and seq."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from clusterstore.eventstore import (
    EventStore,
    FutureEventVersionError,
    RawEvent,
    UnknownEventTypeError,
    codec,
)
from clusterstore.eventstore.codec import AssignmentDigest, decode
from clusterstore.eventstore.events import (
    UPCASTERS,
    AssignmentRecorded,
    Event,
    RunCompleted,
    RunFailed,
    RunStarted,
)

FIXTURE = Path(__file__).parent / "fixtures" / "log_v1.jsonl"


def fixture_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def as_json(event: Event) -> dict[str, Any]:
    return json.loads(msgspec.json.encode(msgspec.structs.asdict(event)))  # type: ignore[no-any-return]


def test_every_fixture_event_decodes_to_the_values_it_was_written_with() -> None:
    rows = fixture_rows()
    assert {r["name"] for r in rows} >= {
        "RunStarted",
        "CentroidsComputed",
        "AssignmentRecorded",
        "RunCompleted",
        "RunFailed",
        "RunResumed",
    }
    for row in rows:
        event = decode(
            row["type"],
            row["version"],
            bytes.fromhex(row["payload"]),
            run_id=uuid.UUID(row["run_id"]),
            seq=row["seq"],
        )
        assert row["name"] == type(event).NAME
        now = as_json(event)
        for key, value in row["expect"].items():  # fields added later may only add keys
            assert now[key] == value, (row["name"], key)


def load_fixture(store: EventStore) -> dict[uuid.UUID, int]:
    by_run: dict[uuid.UUID, list[RawEvent]] = defaultdict(list)
    for row in fixture_rows():
        by_run[uuid.UUID(row["run_id"])].append(
            RawEvent(row["type"], row["version"], bytes.fromhex(row["payload"]))
        )
    return {
        run: store.recorder.append_events(run, events, expected_seq=0).head
        for run, events in by_run.items()
    }


def test_fixture_log_replays_through_the_store_with_its_digest(store: EventStore) -> None:
    heads = load_fixture(store)
    assert sorted(heads.values()) == [3, 9]
    for run in heads:
        events = list(store.read(run))
        assert [seq for seq, _ in events] == list(range(1, heads[run] + 1))
        completed = [e for _, e in events if isinstance(e, RunCompleted)]
        started = events[0].event
        # stored before digest versions existed: the default says version 1
        assert isinstance(started, RunStarted) and started.digest_version == 1
        if completed:
            digest = AssignmentDigest.for_run(started)
            for raw in store.read_raw(run):
                if raw.type == AssignmentRecorded.TYPE:
                    digest.update(raw.payload, 1)
            assert (digest.count, digest.hexdigest()) == (
                completed[0].count,
                completed[0].digest,
            )


class RunFailedV2(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = RunFailed.TYPE
    NAME: ClassVar[str] = "RunFailed"
    VERSION: ClassVar[int] = 2
    message: str  # renamed from `error`
    last_seq: int
    failed_at: Any
    error_type: str = ""


class RunFailedV3(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = RunFailed.TYPE
    NAME: ClassVar[str] = "RunFailed"
    VERSION: ClassVar[int] = 3
    message: str
    last_seq: int
    failed_at: Any
    error_type: str = ""
    retryable: bool  # new in v3, derived from the old data


def _v1_to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    obj = dict(obj)
    obj["message"] = obj.pop("error")
    return obj


def _v2_to_v3(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "retryable": obj.get("error_type") == "OSError"}


def test_upcasters_run_as_a_chain_from_the_stored_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = next(r for r in fixture_rows() if r["name"] == "RunFailed")
    monkeypatch.setitem(codec.BY_CODE, RunFailed.TYPE, RunFailedV3)
    monkeypatch.setitem(codec._DECODERS, RunFailed.TYPE, msgspec.msgpack.Decoder(RunFailedV3))
    monkeypatch.setitem(UPCASTERS, (RunFailed.TYPE, 1), _v1_to_v2)
    monkeypatch.setitem(UPCASTERS, (RunFailed.TYPE, 2), _v2_to_v3)
    event = decode(row["type"], 1, bytes.fromhex(row["payload"]))
    assert isinstance(event, RunFailedV3)
    assert (event.message, event.retryable, event.last_seq) == ("disk full", True, 1)


def test_a_missing_upcaster_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    row = next(r for r in fixture_rows() if r["name"] == "RunFailed")
    monkeypatch.setitem(codec.BY_CODE, RunFailed.TYPE, RunFailedV2)
    run = uuid.UUID(row["run_id"])
    with pytest.raises(codec.EventDecodeError, match=rf"run {run} seq 2: no upcaster"):
        decode(row["type"], 1, bytes.fromhex(row["payload"]), run_id=run, seq=2)


def test_an_added_field_with_a_default_needs_no_upcaster() -> None:
    # AssignmentRecorded.legacy_id was added after the fixture's first events were defined:
    # a 3-element payload decodes with legacy_id None ...
    row = next(r for r in fixture_rows() if r["name"] == "AssignmentRecorded")
    event = decode(row["type"], row["version"], bytes.fromhex(row["payload"]))
    assert isinstance(event, AssignmentRecorded) and event.legacy_id is None

    # ... and old code (without the field) reads a new 4-element payload, ignoring it.
    class OldAssignment(msgspec.Struct, array_like=True):
        embedding_id: uuid.UUID
        cluster: int
        distance: float

    new = codec.encode(
        AssignmentRecorded(
            embedding_id=uuid.UUID(int=5), cluster=2, distance=0.25, legacy_id=uuid.UUID(int=9)
        )
    )
    assert len(new.payload) == codec.LEGACY_ASSIGNMENT_WIDTH
    old = msgspec.msgpack.decode(new.payload, type=OldAssignment)
    assert (old.embedding_id, old.cluster, old.distance) == (uuid.UUID(int=5), 2, 0.25)
    assert decode(new.type, new.version, new.payload) == AssignmentRecorded(
        embedding_id=uuid.UUID(int=5), cluster=2, distance=0.25, legacy_id=uuid.UUID(int=9)
    )


def test_unknown_type_and_future_version_name_run_and_seq(store: EventStore) -> None:
    run = uuid.uuid4()
    good = codec.encode(RunFailed(error="x", last_seq=0, failed_at=_t0()))
    store.recorder.append_events(
        run,
        [good, RawEvent(99, 1, b"\x90"), RawEvent(RunFailed.TYPE, 9, good.payload)],
        expected_seq=0,
    )
    with pytest.raises(UnknownEventTypeError, match=rf"run {run} seq 2: unknown event type"):
        list(store.read(run))
    with pytest.raises(FutureEventVersionError, match=rf"run {run} seq 3: RunFailed has schema"):
        list(store.read(run, after=2))


def test_assignment_payloads_of_any_layout_decode_in_bulk() -> None:
    ids = [uuid.UUID(int=i + 1) for i in range(3)]
    native = codec.pack_assignments([u for u in ids], [0, 1, 2], [0.5, 1.5, 2.5])
    legacy = codec.pack_assignments(ids, [0, 1, 2], [0.5, 1.5, 2.5], legacy_ids=ids[::-1])
    for packed, legacy_ids in ((native, [bytes(16)] * 3), (legacy, [u.bytes for u in ids[::-1]])):
        rec = codec.assignments_from_payloads([packed.payload(i) for i in range(3)])
        assert [bytes(x) for x in rec["embedding_id"]] == [u.bytes for u in ids]
        assert rec["cluster"].tolist() == [0, 1, 2]
        assert rec["distance"].tolist() == [0.5, 1.5, 2.5]
        assert [bytes(x) for x in rec["legacy_id"]] == legacy_ids
    # a payload that is valid msgpack but not the fixed layout goes the slow, exact way
    odd = msgspec.msgpack.encode([ids[0].bytes, 7, 0.125])
    rec = codec.assignments_from_payloads([odd])
    assert (bytes(rec["embedding_id"][0]), int(rec["cluster"][0])) == (ids[0].bytes, 7)


def _t0() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC)

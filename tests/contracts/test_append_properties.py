"""Random sequences of appends read back identically, on every backend (Hypothesis).

A state machine keeps a model of the log (each run's events, the global feed in commit
order) and appends random batches (packed and unpacked, of random sizes) to several runs,
re-sends stored ranges (also extending past the head), and tries stale and gapped appends.
After every step ``max_position`` matches; read rules compare ``read_stream`` and
``read_all`` (random ``after``/``limit``/page size across commit boundaries) with the model.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from clusterstore.eventstore import (
    ConcurrencyError,
    Event,
    EventConflictError,
    EventStore,
    PackedEvents,
    RawEvent,
    pack_assignments,
)
from clusterstore.eventstore.codec import encode
from clusterstore.eventstore.store import decode_stored
from tests.contracts.support import ANY_EVENT, snapshot

N_RUNS = 3

packed_batches = st.builds(
    lambda n, seed: _packed(n, seed),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=0, max_value=2**32 - 1),
)
event_batches = st.lists(ANY_EVENT, min_size=1, max_size=6)
batches = st.one_of(packed_batches, event_batches)


def _packed(n: int, seed: int) -> PackedEvents:
    rng = np.random.default_rng(seed)
    return pack_assignments(
        rng.integers(0, 256, (n, 16), dtype=np.uint8),
        rng.integers(0, 1000, n),
        rng.random(n, dtype=np.float32),
    )


def _raw(batch: PackedEvents | list[Event]) -> list[RawEvent]:
    return batch.raw() if isinstance(batch, PackedEvents) else [encode(e) for e in batch]


def _as_batch(raws: list[RawEvent], packed: bool) -> Any:
    """The same events as a PackedEvents (when they are all assignments) or as Events."""
    if packed and raws and all(r.type == raws[0].type and len(r.payload) == 29 for r in raws):
        return PackedEvents(raws[0].type, raws[0].version, 29, b"".join(r.payload for r in raws))
    return [decode_stored_raw(r) for r in raws]


def decode_stored_raw(r: RawEvent) -> Event:
    from clusterstore.eventstore.codec import decode

    return decode(r.type, r.version, r.payload)


class LogMachine(RuleBasedStateMachine):
    store: EventStore  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.base = self.store.max_position()  # the log persists across examples
        self.run_ids = [uuid.uuid4() for _ in range(N_RUNS)]
        self.model: dict[uuid.UUID, list[RawEvent]] = {r: [] for r in self.run_ids}
        self.feed: list[tuple[uuid.UUID, int]] = []  # (run, seq) in position order

    def _record(self, run: uuid.UUID, raws: list[RawEvent]) -> None:
        for r in raws:
            self.model[run].append(r)
            self.feed.append((run, len(self.model[run])))

    @rule(i=st.integers(0, N_RUNS - 1), batch=batches, explicit=st.booleans())
    def append(self, i: int, batch: PackedEvents | list[Event], explicit: bool) -> None:
        run = self.run_ids[i]
        head = len(self.model[run])
        raws = _raw(batch)
        result = self.store.append(run, batch, expected_seq=head if explicit else None)
        assert (result.head, result.appended, result.first_seq) == (
            head + len(raws),
            len(raws),
            head + 1,
        )
        assert result.position == self.base + len(self.feed) + 1
        self._record(run, raws)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), extra=st.one_of(st.just([]), event_batches), packed=st.booleans())
    def resend(self, data: st.DataObject, extra: list[Event], packed: bool) -> None:
        """Re-send a stored range, optionally running past the head with new events."""
        run = data.draw(st.sampled_from([r for r in self.run_ids if self.model[r]]))
        head = len(self.model[run])
        start = data.draw(st.integers(0, head - 1))
        stop = data.draw(st.integers(start + 1, head))
        tail = [encode(e) for e in extra] if stop == head else []
        raws = self.model[run][start:stop] + tail
        result = self.store.append(run, _as_batch(raws, packed), expected_seq=start)
        assert (result.head, result.appended, result.first_seq) == (
            head + len(tail),
            len(tail),
            start + 1,
        )
        assert result.position == (self.base + len(self.feed) + 1 if tail else None)
        self._record(run, tail)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), batch=batches)
    def refused(self, data: st.DataObject, batch: PackedEvents | list[Event]) -> None:
        """A conflicting re-send or a gap is refused and changes nothing."""
        run = data.draw(st.sampled_from([r for r in self.run_ids if self.model[r]]))
        head = len(self.model[run])
        expected = data.draw(st.integers(0, head + 3))
        raws = _raw(batch)
        stored = self.model[run][expected : expected + len(raws)]
        if expected <= head and raws[: len(stored)] == stored:
            return  # that would be an idempotent re-send: covered by ``resend``
        before = snapshot(self.store)
        if expected > head:
            with pytest.raises(ConcurrencyError) as info:
                self.store.append(run, batch, expected_seq=expected)
            assert not isinstance(info.value, EventConflictError)
        else:
            with pytest.raises(EventConflictError) as info:
                self.store.append(run, batch, expected_seq=expected)
            first_diff = next(
                k for k, (a, b) in enumerate(zip(raws, stored, strict=False)) if a != b
            )
            assert info.value.seq == expected + 1 + first_diff
        assert (info.value.run_id, info.value.expected, info.value.actual) == (
            run,
            expected,
            head,
        )
        assert snapshot(self.store) == before

    @rule(data=st.data(), page_size=st.integers(1, 50))
    def read_feed(self, data: st.DataObject, page_size: int) -> None:
        total = len(self.feed)
        after = data.draw(st.integers(0, total))
        limit = data.draw(st.none() | st.integers(1, total + 2))
        got = list(
            self.store.recorder.read_all(after=self.base + after, limit=limit, page_size=page_size)
        )
        want = self.feed[after:] if limit is None else self.feed[after : after + limit]
        assert [(ev.run_id, ev.seq) for ev in got] == want
        assert [ev.position for ev in got] == list(
            range(self.base + after + 1, self.base + after + 1 + len(want))
        )
        for ev in got:
            stored = self.model[ev.run_id][ev.seq - 1]
            assert (ev.type, ev.version, ev.payload) == stored

    @rule(i=st.integers(0, N_RUNS - 1), data=st.data(), page_size=st.integers(1, 50))
    def read_stream(self, i: int, data: st.DataObject, page_size: int) -> None:
        run = self.run_ids[i]
        events = self.model[run]
        after = data.draw(st.integers(0, len(events)))
        limit = data.draw(st.none() | st.integers(1, len(events) + 2))
        got = list(
            self.store.recorder.read_stream(run, after=after, limit=limit, page_size=page_size)
        )
        want = events[after:] if limit is None else events[after : after + limit]
        assert [(ev.seq, ev.type, ev.version, ev.payload) for ev in got] == [
            (after + 1 + k, *r) for k, r in enumerate(want)
        ]

    @invariant()
    def positions_and_heads(self) -> None:
        assert self.store.max_position() == self.base + len(self.feed)

    def teardown(self) -> None:
        # the full feed of this example: dense positions, each run's events in seq order
        got = [(ev.position, ev.run_id, ev.seq) for ev in self.store.feed(after=self.base)]
        assert [p for p, _, _ in got] == list(range(self.base + 1, self.base + 1 + len(self.feed)))
        assert [(r, s) for _, r, s in got] == self.feed
        for run, events in self.model.items():
            assert self.store.head(run) == len(events)
            decoded = list(self.store.read(run))
            assert [d.seq for d in decoded] == list(range(1, len(events) + 1))
            for d, raw in zip(decoded, events, strict=True):
                assert encode(d.event) == raw
            raws = list(self.store.read_raw(run))
            assert [decode_stored(r) for r in raws] == [d.event for d in decoded]


def test_random_appends_read_back_identically(store: EventStore) -> None:
    LogMachine.store = store
    run_state_machine_as_test(
        LogMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

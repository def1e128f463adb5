"""Run summaries and status, derived from the log without decoding a run's assignments.

A summary reads two events per run by primary key, RunStarted (seq 1) and the last
committed event (the last seq that ``cs_commits`` covers, so a row inserted around the
store does not change what a run looks like), plus, for a run that has not completed, a
count of its AssignmentRecorded rows (a count over the run's key range, no decoding).
Listing runs of 10M events each stays cheap.

Status, from the last committed event, folded with ``eventstore.lifecycle`` like every
other reader of a run (only RunStarted and that event are applied):
- ``completed``: the run ends with RunCompleted;
- ``failed``: its last lifecycle event is RunFailed, not followed by a RunResumed;
- ``running`` otherwise: still being written, or its writer stopped without a word (killed).
  Tables say ``incomplete`` for it, since the log cannot tell those two apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from clusterstore.eventstore import (
    Event,
    EventStore,
    RunCompleted,
    RunFailed,
    RunStarted,
    StoredEvent,
)
from clusterstore.eventstore.errors import EventDecodeError, InputError, RunNotFoundError
from clusterstore.eventstore.lifecycle import STATUSES, TERMINAL_STATUS, RunLifecycle, Status
from clusterstore.eventstore.store import decode_stored
from clusterstore.eventstore.vocabulary import duration_s, timestamp

from ._log import committed_heads, count_assignments, events_at

STATUS_LABELS: dict[Status, str] = {
    "running": "incomplete",
    "completed": "completed",
    "failed": "failed",
}
MIN_ID_CHARS = 8


@dataclass(frozen=True)
class RunSummary:
    run_id: UUID
    status: Status
    events: int  # the head seq
    n_assignments: int
    created_at: datetime
    started: RunStarted | None
    completed: RunCompleted | None = None
    failed: RunFailed | None = None
    problem: str | None = None  # RunStarted or the head event did not decode

    @property
    def model(self) -> str | None:
        return self.started.model if self.started else None

    @property
    def started_at(self) -> datetime:
        return self.started.started_at if self.started else self.created_at

    @property
    def finished_at(self) -> datetime | None:
        if self.completed is not None:
            return self.completed.finished_at
        if self.failed is not None:
            return self.failed.failed_at
        return None

    @property
    def duration_s(self) -> float | None:
        """The vocabulary's one duration (naive datetimes in events are read as UTC)."""
        return duration_s(self.started_at, self.finished_at)

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    def to_json(self) -> dict[str, Any]:
        s = self.started
        return {
            "run_id": str(self.run_id),
            "model": s.model if s else None,
            "algorithm": s.algorithm if s else None,
            "k": s.k if s else None,
            "n_embeddings": s.n_embeddings if s else None,
            "n_assignments": self.n_assignments,
            "n_noise": self.completed.n_noise if self.completed else None,
            "status": self.status,
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
            "duration_s": self.duration_s,
            "n_events": self.events,
            "error": self.failed.error if self.failed else None,
            "problem": self.problem,
        }


def parse_status(value: str) -> Status:
    """A status name; ``incomplete`` (the table's word) is accepted for ``running``."""
    v = value.strip().lower()
    if v == "incomplete":
        return "running"
    if v not in STATUSES:
        raise InputError(f"unknown status {value!r}; use running, completed or failed")
    return v  # type: ignore[return-value]


def summarize_runs(store: EventStore, run_ids: list[UUID] | None = None) -> list[RunSummary]:
    """Summaries of the given runs (default: all), newest first."""
    heads = store.runs()
    if run_ids is not None:
        wanted = set(run_ids)
        heads = [h for h in heads if h.run_id in wanted]
    committed = committed_heads(store)
    ends = {h.run_id: committed.get(h.run_id, h.head) for h in heads}
    keys = {(h.run_id, s) for h in heads for s in (1, h.head, ends[h.run_id]) if s >= 1}
    found = events_at(store, sorted(keys))
    out = []
    for h in reversed(heads):
        first = found.get((h.run_id, 1))
        last = found.get((h.run_id, ends[h.run_id])) or found.get((h.run_id, h.head))
        out.append(_summary(store, h.run_id, h.created_at, h.head, first, last))
    return out


def summarize_run(store: EventStore, run_id: UUID) -> RunSummary:
    found = summarize_runs(store, [run_id])
    if not found:
        raise RunNotFoundError(f"no run {run_id}; `clusterstore runs list` shows them")
    return found[0]


def list_runs(
    store: EventStore, *, status: Status | None = None, model: str | None = None
) -> list[RunSummary]:
    """All runs, newest first, optionally only those with a status and/or model."""
    return [
        s
        for s in summarize_runs(store)
        if (status is None or s.status == status) and (model is None or s.model == model)
    ]


def _summary(
    store: EventStore,
    run_id: UUID,
    created_at: datetime,
    head: int,
    first: StoredEvent | None,
    last: StoredEvent | None,
) -> RunSummary:
    problems = []
    life = RunLifecycle()
    if head == 0:
        problems.append("the run has no events")
    elif first is None or first.type != RunStarted.TYPE:
        problems.append("seq 1 is not a RunStarted event")
    else:
        event = _decode(first, problems)
        if isinstance(event, RunStarted):
            life.apply(event, first.seq)
    status: Status = life.status
    if last is not None and last.type in TERMINAL_STATUS:
        event = _decode(last, problems)
        if event is not None:
            life.apply(event, last.seq)
        # an undecodable last event still says by its type how the run ended
        status = life.status if event is not None else TERMINAL_STATUS[last.type]
    completed, failed = life.completed, life.failed
    n = completed.count if completed is not None else count_assignments(store, run_id)
    return RunSummary(
        run_id=run_id,
        status=status,
        events=head,
        n_assignments=n,
        created_at=created_at,
        started=life.started,
        completed=completed,
        failed=failed,
        problem="; ".join(problems) or None,
    )


def _decode(ev: StoredEvent, problems: list[str]) -> Event | None:
    try:
        return decode_stored(ev)
    except EventDecodeError as e:
        problems.append(str(e))
        return None


# ---------------------------------------------------------------- telling ids apart


def id_digits(store: EventStore) -> int:
    """Hex digits to show so that every run in the store can be told apart."""
    return unique_prefix_length([h.run_id for h in store.runs()])


def unique_prefix_length(run_ids: list[UUID], *, minimum: int = MIN_ID_CHARS) -> int:
    """The number of hex digits that tells every one of ``run_ids`` apart (at least
    ``minimum``). UUIDv7s made close in time share their leading (timestamp) digits."""
    hexes = sorted(u.hex for u in run_ids)
    need = minimum
    for a, b in itertools.pairwise(hexes):
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), 32)
        need = max(need, common + 1)
    return min(need, 32)


def short_id(run_id: UUID, hex_digits: int) -> str:
    """The id's canonical form cut after ``hex_digits`` hex digits (dashes kept), which
    ``EventStore.resolve_run`` accepts as a prefix."""
    text = str(run_id)
    seen = 0
    for i, ch in enumerate(text):
        if ch != "-":
            seen += 1
            if seen == hex_digits:
                return text[: i + 1]
    return text

"""A run's lifecycle, folded from its events: the one place that says what each event does
to a run.

``transition(event)`` is what one lifecycle event changes (status, error, end time);
``RunLifecycle`` applies a run's events in seq order and holds its state: status, the
RunStarted event (params), centroids, rows done, the seq of row 0 of the current segment,
the digest so far, cluster sizes, error, timings and the completion event. Assignments are
applied as numpy blocks, decoded with the vectorised decoders of ``codec``.

    life = runs.replay_run(store, run_id)   # RunLifecycle().feed(page) for every page;
    life.status, life.rows, life.digest.hexdigest(), life.sizes   # a damaged log raises

Readers that must survive a damaged log (``audit.verify``) decide themselves what to apply
(``apply`` for a decoded event, ``account`` for a block of assignments); projections that
keep their state in tables apply ``transition`` event by event. A new event type that
changes a run's state is added here (and in ``events``), nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from .checkpoints import Checkpoint
from .codec import assignments_from_payloads, count_labels, decode
from .digest import DIGEST_V1, DIGEST_V2, SEGMENT_ROWS, AssignmentDigest
from .errors import EventDecodeError
from .events import (
    AssignmentRecorded,
    CentroidsComputed,
    Event,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from .recorder import StoredEvent

Status = Literal["running", "completed", "failed"]
STATUSES: tuple[Status, ...] = ("running", "completed", "failed")
# The status a run's last event gives it, by type code alone (a summary that reads only the
# last event and may not be able to decode it). Any other last event: running.
TERMINAL_STATUS: dict[int, Status] = {RunCompleted.TYPE: "completed", RunFailed.TYPE: "failed"}
MAX_REPLAY_CLUSTERS = 1 << 20  # the cluster bound before a RunStarted says k


@dataclass(frozen=True)
class Transition:
    """What one lifecycle event makes of a run: its status afterwards, the error it shows
    (None clears it) and when it finished (None: not finished)."""

    status: Status
    error: str | None = None
    finished_at: datetime | None = None


def transition(event: Event) -> Transition | None:
    """The change ``event`` makes to its run's lifecycle; None for events that make none
    (centroids, assignments)."""
    match event:
        case RunStarted() | RunResumed():
            return Transition("running")
        case RunCompleted():
            return Transition("completed", None, event.finished_at)
        case RunFailed():
            return Transition("failed", event.error, event.failed_at)
    return None


def _stored(ev: StoredEvent) -> Event:
    return decode(ev.type, ev.version, ev.payload, run_id=ev.run_id, seq=ev.seq)


class RunLifecycle:
    """The state of one run after the events applied so far, in seq order."""

    def __init__(self) -> None:
        self._started: RunStarted | None = None
        self._centroids: CentroidsComputed | None = None
        self._completed: RunCompleted | None = None
        self._failed: RunFailed | None = None  # the last RunFailed not followed by RunResumed
        self._status: Status = "running"
        self._resumed: list[datetime] = []
        self._rows = 0
        self._base: int | None = None
        # the version RunStarted declares; before one is applied, version 1's (a damaged
        # log's reader decides what an unknown version means: ``audit.verify``)
        self._digest = AssignmentDigest(DIGEST_V1)
        self._boundary: Checkpoint | None = None  # the state at the last boundary passed
        self._watched: dict[int, Checkpoint | None] = {}  # boundaries asked for (``watch``)
        self._sizes: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._n_noise = 0  # assignments labelled -1: in the count and digest, in no cluster
        self._head = 0

    # ---------------------------------------------------------------- the state

    @property
    def started(self) -> RunStarted | None:
        return self._started

    @property
    def centroids(self) -> CentroidsComputed | None:
        return self._centroids

    @property
    def completed(self) -> RunCompleted | None:
        return self._completed

    @property
    def failed(self) -> RunFailed | None:
        """The last RunFailed that no RunResumed followed."""
        return self._failed

    @property
    def status(self) -> Status:
        return self._status

    @property
    def error(self) -> str | None:
        return self._failed.error if self._failed is not None else None

    @property
    def started_at(self) -> datetime | None:
        return self._started.started_at if self._started is not None else None

    @property
    def finished_at(self) -> datetime | None:
        if self._completed is not None:
            return self._completed.finished_at
        return self._failed.failed_at if self._failed is not None else None

    @property
    def resumed(self) -> tuple[datetime, ...]:
        """When the run was resumed, in order."""
        return tuple(self._resumed)

    @property
    def rows(self) -> int:
        """Assignments applied (across resumed segments)."""
        return self._rows

    @property
    def base(self) -> int | None:
        """The seq of row 0 in the current segment (None before any assignment or resume)."""
        return self._base

    @property
    def digest(self) -> AssignmentDigest:
        """The run's digest over the assignments so far, of the version its RunStarted
        declares (``digest``; the running digest: do not update)."""
        return self._digest

    @property
    def boundary(self) -> Checkpoint | None:
        """The state at the last segment boundary the assignments passed (a digest of
        version 2 only; None before the first): what a writer stores as its checkpoint."""
        return self._boundary

    def watch(self, rows: int) -> None:
        """Keep the state at ``rows`` assignments (a segment boundary) when it is passed:
        ``state_at(rows)`` (a checker compares a stored checkpoint with it)."""
        if rows % SEGMENT_ROWS == 0 and rows > self._rows:
            self._watched.setdefault(rows, None)
            self._digest.watch(rows)

    def state_at(self, rows: int) -> Checkpoint | None:
        """The watched state at ``rows``, once passed (a version-2 digest only)."""
        return self._watched.get(rows)

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        """Assignments per cluster so far, as long as the highest cluster seen (a copy)."""
        return self._sizes.copy()

    @property
    def n_noise(self) -> int:
        """Assignments labelled noise (-1) so far: in ``rows`` and the digest, in no size."""
        return self._n_noise

    @property
    def head(self) -> int:
        """The last seq applied."""
        return self._head

    # ---------------------------------------------------------------- applying

    def apply(self, event: Event, seq: int) -> None:
        """Apply one decoded event other than an assignment (those go through ``account``)."""
        self._head = max(self._head, seq)
        match event:
            case RunStarted():
                self._started = event
                if self._rows == 0 and event.digest_version != self._digest.version:
                    self._digest = AssignmentDigest(event.digest_version)
                    for rows in self._watched:
                        self._digest.watch(rows)
            case CentroidsComputed():
                self._centroids = event
            case RunCompleted():
                self._completed = event
            case RunFailed():
                self._failed = event
            case RunResumed():
                self._failed = None
                self._resumed.append(event.resumed_at)
                self._base = seq + 1 - self._rows
        change = transition(event)
        if change is not None:
            self._status = change.status

    def account(
        self,
        first_seq: int,
        last_seq: int,
        data: bytes | Sequence[bytes],
        count: int,
        clusters: npt.ArrayLike,
    ) -> None:
        """Apply ``count`` consecutive assignments at seqs ``first_seq .. last_seq`` whose
        payloads are ``data`` (back to back, all of one width; or a list, ``joined``);
        ``clusters`` are the labels to count in the sizes (a checker leaves out the ones it
        cannot trust)."""
        if count == 0:
            return
        self._digest.update(data, count)
        labels = np.asarray(clusters, dtype=np.int64)
        before = self._rows
        cuts = self._cuts(before, count)
        sized = len(labels) == count  # else a checker left labels out: no sizes at the cuts
        lo = 0
        for cut in cuts:  # count the labels in pieces that end at the kept boundaries
            if sized:
                self._count(labels[lo:cut])
                lo = cut
            self._passed(before + cut, first_seq + cut - 1, sized=sized)
        self._count(labels[lo:])
        if self._base is None:
            self._base = first_seq - self._rows
        self._rows += count
        self._head = max(self._head, last_seq)

    def _cuts(self, before: int, count: int) -> list[int]:
        """The offsets in a block of ``count`` rows after ``before`` at which the block
        reaches a boundary whose state is kept: the last one, and any watched."""
        if self._digest.version != DIGEST_V2:
            return []
        last = (before + count) // SEGMENT_ROWS * SEGMENT_ROWS
        rows = {w for w in self._watched if before < w <= before + count}
        if last > before:
            rows.add(last)
        return sorted(r - before for r in rows)

    def _count(self, labels: npt.NDArray[np.int64]) -> None:
        if not labels.size:
            return
        counts, n_noise = count_labels(labels)  # noise (-1) is counted apart
        self._n_noise += n_noise
        if counts.shape[0] > self._sizes.shape[0]:
            self._sizes = np.pad(self._sizes, (0, counts.shape[0] - self._sizes.shape[0]))
        self._sizes[: counts.shape[0]] += counts

    def _passed(self, rows: int, seq: int, *, sized: bool) -> None:
        """The fold has just reached ``rows`` assignments (a boundary), the last at ``seq``
        (when the block's seqs are contiguous, as in any sound log)."""
        boundary = self._digest.boundary_at(rows) or self._digest.last_boundary
        if boundary is None or boundary.rows != rows:
            return
        state = Checkpoint(
            rows,
            seq,
            boundary.chain,
            self._sizes.copy() if sized else None,
            self._n_noise if sized else None,
        )
        if rows in self._watched:
            self._watched[rows] = state
        if self._boundary is None or rows > self._boundary.rows:
            self._boundary = state

    def restore(self, state: Checkpoint) -> None:
        """Continue from a checkpoint of this run (after its RunStarted is applied): the
        state after its first ``state.rows`` assignments, the last at ``state.seq``."""
        if self._rows or self._digest.version != DIGEST_V2 or state.sizes is None:
            raise ValueError("a checkpoint restores a version-2 run before any assignment")
        self._digest = AssignmentDigest(DIGEST_V2, start=state.boundary)
        self._sizes = state.sizes.astype(np.int64, copy=True)
        self._n_noise = int(state.n_noise or 0)
        self._rows = state.rows
        self._base = state.seq - (state.rows - 1)
        self._head = max(self._head, state.seq)
        self._boundary = state

    def feed(self, page: Sequence[StoredEvent]) -> None:
        """Apply a page of stored events in seq order; runs of assignments are applied as
        one block. A damaged log raises ``EventDecodeError`` naming the run and seq."""
        start = 0
        for i, ev in enumerate(page):
            if ev.type != AssignmentRecorded.TYPE:
                self._assignments(page[start:i])
                self.apply(_stored(ev), ev.seq)
                start = i + 1
        self._assignments(page[start:])

    def _assignments(self, block: Sequence[StoredEvent]) -> None:
        if not block:
            return
        payloads = [ev.payload for ev in block]
        try:
            labels = assignments_from_payloads(payloads)["cluster"]  # any layout (legacy too)
        except EventDecodeError:
            for ev in block:  # name the run and the first seq that does not decode
                _stored(ev)
            raise
        # A damaged log must not make the replay count 2^32 clusters (a huge allocation):
        # sizes are counted densely, so the bound is k, or MAX_REPLAY_CLUSTERS when there
        # is no RunStarted or it declares more clusters than embeddings (start_run refuses
        # that; such a k, e.g. 2^31, only comes from a damaged log).
        s = self._started
        bound, limit = MAX_REPLAY_CLUSTERS, f"the {MAX_REPLAY_CLUSTERS} clusters a replay counts"
        if s is not None and s.k <= max(s.n_embeddings, MAX_REPLAY_CLUSTERS):
            bound, limit = s.k, f"k={s.k}"
        elif s is not None:
            limit += f" (RunStarted declares k={s.k} for {s.n_embeddings} embeddings)"
        over = np.flatnonzero(labels >= bound)
        if len(over):
            bad = block[int(over[0])]
            raise EventDecodeError(
                bad.run_id,
                bad.seq,
                f"AssignmentRecorded cluster {int(labels[over[0]])} is not below {limit}; "
                "the log is damaged (`clusterstore runs verify` lists what)",
            )
        self.account(block[0].seq, block[-1].seq, joined(payloads), len(block), labels)


def joined(payloads: Sequence[bytes]) -> bytes | Sequence[bytes]:
    """Payloads for ``RunLifecycle.account``: back to back when they are all of one width
    (the digest cuts them into rows by it), else the list itself."""
    if len({len(p) for p in payloads}) <= 1:
        return b"".join(payloads)
    return payloads

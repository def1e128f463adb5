"""The run lifecycle: start, record assignments in batches, complete or fail, resume.

    with start_run(store, model="all-mpnet-base-v2", algorithm="kmeans-l2", k=100,
                   n_embeddings=n, dim=d, seed=7) as run:
        run.record_centroids(centroids)
        for lo in range(0, n, chunk):
            run.record(ids[lo:hi], labels[lo:hi], distances[lo:hi])
    # leaving the block completes the run (RunCompleted with count and digest);
    # an exception appends RunFailed and propagates.

The seq of input row ``row`` is ``base + row`` (``base`` = the seq after the preamble, or
after the last RunResumed), so any batch can be rebuilt from the input and re-sent: the
store takes an identical re-send as a no-op and refuses a different one. What was appended
before a crash stays; ``resume_run`` continues from the first missing row.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import uuid_utils.compat as uuid7

from .checkpoints import CHECKPOINT_BYTES_PER_ROW
from .codec import NOISE, AssignmentDigest, PackedEvents, pack_assignments
from .digest import CURRENT_DIGEST_VERSION, DIGEST_V2
from .errors import (
    ConcurrentWriterError,
    DatabaseBusyError,
    DiskFullError,
    EventConflictError,
    EventStoreError,
    InputError,
    RunInterrupted,
    RunNotFoundError,
)
from .events import (
    AssignmentRecorded,
    CentroidsComputed,
    Event,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from .lifecycle import RunLifecycle
from .recorder import AppendResult, StoredEvent
from .store import EventStore, decode_stored
from .text import check_fields

DEFAULT_BATCH_SIZE = 100_000
# how a run goes on after a full disk or Ctrl-C stopped it, unless the code that started it
# knows how to resume it (``RunWriter.continued_by``)
NOT_RESUMABLE = "run the command again (a new run: this one cannot be resumed)"
ProgressFn = Callable[[int], None]  # called with how many more items are done


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise ``KeyboardInterrupt``.

    Every append of a run goes through this: a ``KeyboardInterrupt`` raised inside the
    database driver or SQLAlchemy's pool can leave a connection mid-transaction (measured:
    a Ctrl-C during ``clusterstore cluster`` left SQLite's write lock held, and the RunFailed
    append then waited on it), or land after COMMIT but before the writer saw the new head.
    Only the main thread receives SIGINT; elsewhere, or under a custom handler, this is a
    no-op.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def new_run_id() -> UUID:
    """A UUIDv7: time-ordered, made once per run (never on the per-event hot path)."""
    return uuid7.uuid7()


class RunWriter:
    """Appends one run's events. Not thread-safe; one writer per run at a time.

    Made by ``start_run`` (a new run), ``read_progress`` (positioned after what the log
    holds) or ``begin`` (a RunStarted built elsewhere, e.g. an import); ``resume`` starts a
    new segment. Its state is its own: callers read it through properties. It keeps the
    same ``RunLifecycle`` a reader folds from the log, so the digest and cluster sizes it
    completes with are the ones a replay computes.
    """

    def __init__(
        self,
        store: EventStore,
        run_id: UUID,
        started: RunStarted,
        *,
        head: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lifecycle: RunLifecycle | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self._store = store
        self._run_id = run_id
        self._started = started
        self._head = head
        self._batch_size = batch_size
        if lifecycle is None:
            lifecycle = RunLifecycle()
            lifecycle.apply(started, 1)
        self._life = lifecycle
        self._base = lifecycle.base  # seq of row 0 in the current segment
        self._finished = lifecycle.completed is not None
        self._completion: RunCompleted | None = None  # built once: a retry re-sends it
        # rows of the checkpoint last stored (or restored from): ``_checkpoint``
        boundary = lifecycle.boundary
        self._checkpointed = 0 if boundary is None else boundary.rows
        self.on_progress: ProgressFn | None = None  # called with the rows of each batch
        # how the run goes on once a full disk stopped it (``DiskFullError.stopping``), set
        # by the code that can continue it, e.g. "`clusterstore runs resume <run>`"
        self.continued_by = NOT_RESUMABLE

    @classmethod
    def begin(
        cls,
        store: EventStore,
        run_id: UUID,
        started: RunStarted,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> RunWriter:
        """Append ``started`` as seq 1 of a new run and return its writer."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        check_fields(started)  # names and paths from argv may not be UTF-8
        with deferred_interrupt():
            head = store.append(run_id, [started], expected_seq=0).head
        return cls(store, run_id, started, head=head, batch_size=batch_size)

    # ------------------------------------------------------------------ reading

    @property
    def store(self) -> EventStore:
        return self._store

    @property
    def run_id(self) -> UUID:
        return self._run_id

    @property
    def started(self) -> RunStarted:
        return self._started

    @property
    def head(self) -> int:
        """The last seq this writer knows the log holds."""
        return self._head

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def rows_done(self) -> int:
        return self._life.rows

    @property
    def has_centroids(self) -> bool:
        return self._life.centroids is not None

    @property
    def digest(self) -> AssignmentDigest:
        """The digest of the assignments recorded so far."""
        return self._life.digest

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        return self._life.sizes

    @property
    def n_noise(self) -> int:
        """Rows labelled -1 (noise) so far: in the count and digest, in no cluster."""
        return self._life.n_noise

    @property
    def completion(self) -> RunCompleted | None:
        """The RunCompleted this writer built (a retried ``complete`` re-sends it)."""
        return self._completion

    @property
    def finished(self) -> bool:
        return self._finished

    # ------------------------------------------------------------------ writing

    def record_centroids(
        self,
        centroids: npt.ArrayLike,
        *,
        objective: float | None = None,
        iterations: int | None = None,
        train_seconds: float | None = None,
    ) -> None:
        """Record the k x dim centroids; must come before any assignment."""
        if self._base is not None or self.has_centroids:
            raise InputError(
                f"run {self.run_id}: centroids must be recorded once, before any assignment"
            )
        c = np.ascontiguousarray(np.asarray(centroids, dtype="<f4"))
        if c.ndim != 2 or c.shape != (self.started.k, self.started.dim):
            raise InputError(
                f"run {self.run_id}: centroids must be {self.started.k} x {self.started.dim}, "
                f"got {'x'.join(map(str, c.shape))}"
            )
        event = CentroidsComputed(
            k=c.shape[0],
            dim=c.shape[1],
            centroids=c.tobytes(),
            objective=objective,
            iterations=iterations,
            train_seconds=train_seconds,
        )
        with deferred_interrupt():
            self._head = self._append([event], self._head).head
            self._life.apply(event, self._head)

    def seq_of(self, row: int) -> int:
        """The seq of input row ``row`` in the current segment."""
        if self._base is None:
            self._base = self._head + 1 - self.rows_done
        return self._base + row

    def record(
        self,
        embedding_ids: npt.ArrayLike,
        labels: npt.ArrayLike,
        distances: npt.ArrayLike,
        *,
        start_row: int | None = None,
        legacy_ids: npt.ArrayLike | None = None,
    ) -> int:
        """Record assignments for rows ``start_row ...`` (default: the next row), in batches.

        Labels are 0 .. k-1, or -1 for noise (outliers: HDBSCAN, BERTopic), which is stored
        and counted (``n_noise``) but in no cluster. Rows already recorded may be re-sent
        (an idempotent no-op when identical). ``legacy_ids`` keeps an imported assignment's
        legacy row id (``codec``). Returns the number of newly written assignments.
        """
        if self._finished:
            raise InputError(f"run {self.run_id} is already finished")
        labels_arr = np.asarray(labels)
        if labels_arr.ndim == 1 and labels_arr.size and labels_arr.min() < NOISE:
            i = int(np.flatnonzero(labels_arr < NOISE)[0])
            first = self.rows_done if start_row is None else start_row
            raise InputError(
                f"run {self.run_id}: row {first + i} has label {labels_arr[i]}; labels are "
                f"0 .. k-1 for clusters, or -1 for noise"
            )
        packed = pack_assignments(embedding_ids, labels, distances, legacy_ids=legacy_ids)
        if packed.count and int(labels_arr.max()) >= self.started.k:
            raise InputError(
                f"cluster labels must be below k={self.started.k}, got {int(labels_arr.max())}"
            )
        done = self.rows_done
        start = done if start_row is None else start_row
        if start > done:
            raise InputError(
                f"run {self.run_id}: rows {done}..{start - 1} are missing; record rows in order"
            )
        if start + packed.count > self.started.n_embeddings:
            raise InputError(
                f"run {self.run_id}: row {start + packed.count - 1} is beyond the "
                f"{self.started.n_embeddings} embeddings the run declared"
            )
        all_labels = labels_arr.astype(np.int64, copy=False).reshape(-1)
        written = 0
        for lo in range(0, packed.count, self._batch_size):
            hi = min(lo + self._batch_size, packed.count)
            chunk = packed.slice(lo, hi)
            with deferred_interrupt():
                expected = self.seq_of(start + lo) - 1
                result = self._append(chunk, expected)
                # Every row of the chunk is now in the log with these bytes: newly written, or
                # already stored (verified identical), e.g. by an earlier attempt whose commit
                # succeeded although the caller saw an error. Account each row exactly once.
                new_from = max(self.rows_done, start + lo) - (start + lo)
                if new_from < chunk.count:
                    self._life.account(
                        expected + 1 + new_from,
                        expected + chunk.count,
                        chunk.slice(new_from, chunk.count).data,
                        chunk.count - new_from,
                        all_labels[lo + new_from : hi],
                    )
                written += result.appended
                self._head = max(self._head, result.head)
                self._checkpoint()
            if self.on_progress is not None:
                self.on_progress(hi - lo)
        return written

    def _checkpoint(self) -> None:
        """Store the state at the last segment boundary the committed rows reached, if it
        is newer than the stored one (``checkpoints``; version-2 digests only)."""
        state = self._life.boundary
        if state is None or state.rows <= self._checkpointed or state.sizes is None:
            return
        if state.sizes.nbytes > (state.rows - self._checkpointed) * CHECKPOINT_BYTES_PER_ROW:
            return  # a huge k: wait until the sizes are a small share of the rows
        try:
            self._store.write_checkpoint(self.run_id, state)
        except DatabaseBusyError:
            return  # other writers hold the database: a later batch stores it (an
            # optimisation must not fail the run; a resume meanwhile folds a little more)
        self._checkpointed = state.rows

    def complete(self, *, finished_at: datetime | None = None) -> RunCompleted:
        """Append RunCompleted with the count, digest and cluster sizes (``finished_at``
        defaults to now; an import gives the legacy result's time)."""
        if self.rows_done != self.started.n_embeddings:
            raise InputError(
                f"run {self.run_id}: {self.rows_done} of {self.started.n_embeddings} "
                "assignments recorded; cannot complete"
            )
        sizes = self.sizes
        sizes = np.pad(sizes, (0, max(0, self.started.k - sizes.shape[0])))
        event = self._completion or RunCompleted(
            count=self.rows_done,
            digest=self.digest.hexdigest(),
            finished_at=finished_at or _now(),
            cluster_sizes=[int(x) for x in sizes],
            n_noise=self._life.n_noise,
        )
        self._completion = event
        with deferred_interrupt():
            self._head = self._append([event], self._head).head
            self._life.apply(event, self._head)
            self._finished = True
        return event

    def record_failure(
        self, error: str, *, failed_at: datetime | None = None, error_type: str = ""
    ) -> RunFailed:
        """Append RunFailed after the log's head; raises what the store raises."""
        # the log's head, not ours: a failed append may have committed unseen
        head = self._store.head(self.run_id)
        event = RunFailed(
            error=error[:2000],
            last_seq=head,
            failed_at=failed_at or _now(),
            error_type=error_type,
        )
        with deferred_interrupt():
            self._head = self._append([event], head).head
            self._life.apply(event, self._head)
            self._finished = True
        return event

    def _append(self, events: Sequence[Event] | PackedEvents, expected_seq: int) -> AppendResult:
        """Append at ``expected_seq + 1``; events stored past this writer's head with other
        bytes were appended by another process since this one looked (a concurrent
        resume): ``ConcurrentWriterError``, not the re-send conflict it would read as."""
        known = self._head
        try:
            return self._store.append(self.run_id, events, expected_seq=expected_seq)
        except EventConflictError as e:
            if e.seq > known:
                raise ConcurrentWriterError(self.run_id, e.seq, e.expected, e.actual) from None
            raise

    def fail(self, error: BaseException | str) -> None:
        """Append RunFailed; never raises (the original error matters more). Not when
        another process writes the run (it carries the run on; a RunFailed would stop it)
        or holds the database's lock (recording would wait as long again: the run is left
        incomplete, and ``runs resume`` continues it)."""
        if self._finished or isinstance(error, ConcurrentWriterError | DatabaseBusyError):
            return
        text = str(error) if str(error) else type(error).__name__
        with suppress(EventStoreError):
            self.record_failure(
                text, error_type="" if isinstance(error, str) else type(error).__name__
            )

    def resume(self, *, input_digest: str = "", batch_size: int = DEFAULT_BATCH_SIZE) -> RunResumed:
        """Append RunResumed and start a new segment at the next row (``resume_run``)."""
        if self._life.completed is not None:
            raise InputError(f"run {self.run_id} is already completed; nothing to resume")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        recorded = self.started.input_digest
        if input_digest and recorded and input_digest != recorded:
            raise InputError(
                f"run {self.run_id}: the input has changed since the run started (digest "
                f"{input_digest[:12]} != {recorded[:12]}); refusing to resume"
            )
        event = RunResumed(from_row=self.rows_done, resumed_at=_now(), input_digest=input_digest)
        with deferred_interrupt():
            self._head = self._append([event], self._head).head
            self._life.apply(event, self._head)
        self._base = self._life.base
        self._finished = False
        self._batch_size = batch_size
        return event

    def interrupted_then(self) -> str:
        """How the run goes on, in the Ctrl-C message (``RunInterrupted``)."""
        if self.continued_by == NOT_RESUMABLE:
            return NOT_RESUMABLE
        return f"{self.continued_by} continues it"

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            if not self._finished:
                self.complete()
        elif isinstance(ev, KeyboardInterrupt):
            self.fail("interrupted (Ctrl-C)")
            if not isinstance(ev, RunInterrupted):
                raise RunInterrupted(self.run_id, self.interrupted_then()) from ev
        else:
            self.fail(ev)
            if isinstance(ev, DiskFullError) and ev.run_id is None:
                raise ev.stopping(self.run_id, self.continued_by) from ev


def start_run(
    store: EventStore,
    *,
    model: str,
    algorithm: str,
    n_embeddings: int,
    dim: int,
    k: int,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    input_digest: str = "",
    run_id: UUID | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **extra: Any,
) -> RunWriter:
    """Append RunStarted for a new run and return its writer."""
    if not model:
        raise InputError("a run needs a model name")
    if n_embeddings < 0 or dim < 0:
        raise InputError("n_embeddings and dim must not be negative")
    # k <= n is k-means' rule (``clustering`` checks it); labels recorded from any algorithm,
    # or new embeddings assigned to a run's clusters, may be fewer than the clusters.
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    run_id = run_id or new_run_id()
    extra.setdefault("digest_version", CURRENT_DIGEST_VERSION)
    started = RunStarted(
        model=model,
        algorithm=algorithm,
        params=params or {},
        n_embeddings=n_embeddings,
        dim=dim,
        k=k,
        seed=seed,
        input_digest=input_digest,
        started_at=_now(),
        **extra,
    )
    return RunWriter.begin(store, run_id, started, batch_size=batch_size)


@dataclass(frozen=True)
class RunProgress:
    """What the log says about a run, read in one streaming pass."""

    started: RunStarted
    centroids: CentroidsComputed | None
    rows_done: int
    head: int
    completed: RunCompleted | None
    failed: RunFailed | None  # the last RunFailed not followed by a RunResumed


def replay_run(store: EventStore, run_id: UUID) -> RunLifecycle:
    """Fold a run's whole log (streamed in pages) into its lifecycle state."""
    life = RunLifecycle()
    for page in store.read_stream_pages(run_id):
        life.feed(page)
    return life


# Events read before the first assignment to find the preamble (RunStarted, centroids, any
# RunFailed/RunResumed before the first row): a page of this many.
_PREAMBLE_PAGE = 8


def fold_from_checkpoint(store: EventStore, run_id: UUID) -> RunLifecycle | None:
    """The run's state folded from its checkpoint: the events before its first assignment,
    the checkpoint, then only the events after it (at most about a batch and a segment).
    None when there is no usable checkpoint (none, a version-1 run, or one that cannot be
    this run's state): the caller folds the whole log. The log decides; a checkpoint that
    disagrees with it is reported by ``runs verify``."""
    state = store.read_checkpoint(run_id)
    if state is None:
        return None
    life = RunLifecycle()
    preamble_end = 0
    for page in store.read_stream_pages(run_id, until=state.seq, page_size=_PREAMBLE_PAGE):
        first = next((i for i, ev in enumerate(page) if ev.type == AssignmentRecorded.TYPE), None)
        life.feed(page[:first])
        preamble_end = page[-1].seq if first is None else page[first].seq - 1
        if first is not None:
            break
    started = life.started
    if (
        started is None
        or started.digest_version != DIGEST_V2
        or life.rows
        or life.completed is not None
        or state.seq <= preamble_end
        or state.problem(k=started.k, n_embeddings=started.n_embeddings) is not None
    ):
        return None
    pages = store.read_stream_pages(run_id, after=state.seq - 1)
    first_page = next(pages, [])
    if not first_page or not _assignment_at(first_page[0], state.seq):
        return None
    life.restore(state)
    life.feed(first_page[1:])
    for page in pages:
        life.feed(page)
    return life


def run_digest(store: EventStore, run_id: UUID) -> AssignmentDigest:
    """A new, empty digest of the version the run's RunStarted (seq 1) declares: version 1
    when seq 1 is missing, not a RunStarted or unreadable (as a replay decides)."""
    first = next(iter(store.read_raw(run_id, until=1)), None)
    started = None
    if first is not None and first.type == RunStarted.TYPE:
        with suppress(EventStoreError):
            event = decode_stored(first)
            started = event if isinstance(event, RunStarted) else None
    return AssignmentDigest.for_run(started)


def _assignment_at(ev: StoredEvent, seq: int) -> bool:
    return ev.seq == seq and ev.type == AssignmentRecorded.TYPE


def read_progress(store: EventStore, run_id: UUID) -> tuple[RunProgress, RunWriter]:
    """A run's state and a writer positioned at the next row: folded from its checkpoint
    when it has a usable one (``fold_from_checkpoint``), else from its whole log."""
    life = fold_from_checkpoint(store, run_id) or replay_run(store, run_id)
    if life.started is None:
        raise RunNotFoundError(f"run {run_id} has no RunStarted event")
    progress = RunProgress(
        life.started, life.centroids, life.rows, life.head, life.completed, life.failed
    )
    writer = RunWriter(store, run_id, life.started, head=life.head, lifecycle=life)
    return progress, writer


def resume_run(
    store: EventStore,
    run_id: UUID,
    *,
    input_digest: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[RunProgress, RunWriter]:
    """Continue an interrupted run: appends RunResumed and returns a writer at the next row."""
    progress, writer = read_progress(store, run_id)
    writer.resume(input_digest=input_digest, batch_size=batch_size)
    return progress, writer


def _now() -> datetime:
    return datetime.now(UTC)

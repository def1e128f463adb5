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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import uuid_utils.compat as uuid7

from .codec import (
    NOISE,
    AssignmentDigest,
    assignments_from_payloads,
    count_labels,
    labels_of,
    pack_assignments,
    unpack_assignments,
)
from .errors import EventDecodeError, EventStoreError, InputError
from .events import (
    AssignmentRecorded,
    CentroidsComputed,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from .recorder import StoredEvent
from .store import EventStore, decode_stored

DEFAULT_BATCH_SIZE = 100_000
MAX_REPLAY_CLUSTERS = 1 << 20  # the cluster bound before a RunStarted says k
ProgressFn = Callable[[int], None]


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


@dataclass
class RunWriter:
    """Appends one run's events. Not thread-safe; one writer per run at a time."""

    store: EventStore
    run_id: UUID
    started: RunStarted
    head: int
    batch_size: int = DEFAULT_BATCH_SIZE
    rows_done: int = 0
    base: int | None = None  # seq of row 0 in the current segment
    has_centroids: bool = False
    digest: AssignmentDigest = field(default_factory=AssignmentDigest)
    sizes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_noise: int = 0  # rows labelled -1 (noise): in the count and digest, in no cluster
    finished: bool = False
    on_progress: ProgressFn | None = None
    completion: RunCompleted | None = None  # built once, so a retried complete() re-sends it

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
        if self.base is not None or self.has_centroids:
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
            self.head = self.store.append(self.run_id, [event], expected_seq=self.head).head
            self.has_centroids = True

    def seq_of(self, row: int) -> int:
        if self.base is None:
            self.base = self.head + 1 - self.rows_done
        return self.base + row

    def record(
        self,
        embedding_ids: npt.ArrayLike,
        labels: npt.ArrayLike,
        distances: npt.ArrayLike,
        *,
        start_row: int | None = None,
    ) -> int:
        """Record assignments for rows ``start_row ...`` (default: the next row), in batches.

        Labels are 0 .. k-1, or -1 for noise (outliers: HDBSCAN, BERTopic), which is stored
        and counted (``n_noise``) but in no cluster. Rows already recorded may be re-sent
        (an idempotent no-op when identical). Returns the number of newly written assignments.
        """
        if self.finished:
            raise InputError(f"run {self.run_id} is already finished")
        start = self.rows_done if start_row is None else start_row
        labels_arr = np.asarray(labels)
        if labels_arr.ndim == 1 and labels_arr.size and labels_arr.min() < NOISE:
            i = int(np.flatnonzero(labels_arr < NOISE)[0])
            raise InputError(
                f"run {self.run_id}: row {start + i} has label {labels_arr[i]}; labels are "
                f"0 .. k-1 for clusters, or -1 for noise"
            )
        packed = pack_assignments(embedding_ids, labels, distances)
        if packed.count and int(labels_arr.max()) >= self.started.k:
            raise InputError(
                f"cluster labels must be below k={self.started.k}, got {int(labels_arr.max())}"
            )
        if start > self.rows_done:
            raise InputError(
                f"run {self.run_id}: rows {self.rows_done}..{start - 1} are missing; "
                "record rows in order"
            )
        if start + packed.count > self.started.n_embeddings:
            raise InputError(
                f"run {self.run_id}: row {start + packed.count - 1} is beyond the "
                f"{self.started.n_embeddings} embeddings the run declared"
            )
        written = 0
        for lo in range(0, packed.count, self.batch_size):
            hi = min(lo + self.batch_size, packed.count)
            chunk = packed.slice(lo, hi)
            with deferred_interrupt():
                expected = self.seq_of(start + lo) - 1
                result = self.store.append(self.run_id, chunk, expected_seq=expected)
                # Every row of the chunk is now in the log with these bytes: newly written, or
                # already stored (verified identical), e.g. by an earlier attempt whose commit
                # succeeded although the caller saw an error. Account each row exactly once.
                new_from = max(self.rows_done, start + lo) - (start + lo)
                if new_from < chunk.count:
                    self._account(chunk.slice(new_from, chunk.count).data, chunk.count - new_from)
                    self.rows_done = start + hi
                written += result.appended
                self.head = max(self.head, result.head)
            if self.on_progress is not None:
                self.on_progress(hi - lo)
        return written

    def _account(self, data: bytes, count: int) -> None:
        self.digest.update(data, count)
        counts, n_noise = count_labels(labels_of(unpack_assignments(data)), self.started.k)
        self.n_noise += n_noise
        if self.sizes.shape[0] < counts.shape[0]:
            self.sizes = np.pad(self.sizes, (0, counts.shape[0] - self.sizes.shape[0]))
        self.sizes[: counts.shape[0]] += counts

    def complete(self) -> RunCompleted:
        """Append RunCompleted with the count, digest and cluster sizes."""
        if self.rows_done != self.started.n_embeddings:
            raise InputError(
                f"run {self.run_id}: {self.rows_done} of {self.started.n_embeddings} "
                "assignments recorded; cannot complete"
            )
        sizes = np.pad(self.sizes, (0, max(0, self.started.k - self.sizes.shape[0])))
        event = self.completion or RunCompleted(
            count=self.rows_done,
            digest=self.digest.hexdigest(),
            finished_at=_now(),
            cluster_sizes=[int(x) for x in sizes],
            n_noise=self.n_noise,
        )
        self.completion = event
        with deferred_interrupt():
            self.head = self.store.append(self.run_id, [event], expected_seq=self.head).head
            self.finished = True
        return event

    def fail(self, error: BaseException | str) -> None:
        """Append RunFailed; never raises (the original error matters more)."""
        if self.finished:
            return
        text = str(error) if str(error) else type(error).__name__
        try:
            # the log's head, not ours: the failed append may have committed unseen
            head = self.store.head(self.run_id)
            event = RunFailed(
                error=text[:2000],
                last_seq=head,
                failed_at=_now(),
                error_type="" if isinstance(error, str) else type(error).__name__,
            )
            with deferred_interrupt():
                self.head = self.store.append(self.run_id, [event], expected_seq=head).head
                self.finished = True
        except EventStoreError:
            pass

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if ev is None:
            if not self.finished:
                self.complete()
        elif isinstance(ev, KeyboardInterrupt):
            self.fail("interrupted (Ctrl-C)")
        else:
            self.fail(ev)


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
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    run_id = run_id or new_run_id()
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
    with deferred_interrupt():
        head = store.append(run_id, [started], expected_seq=0).head
    return RunWriter(store, run_id, started, head, batch_size=batch_size)


@dataclass(frozen=True)
class RunProgress:
    """What the log says about a run, read in one streaming pass."""

    started: RunStarted
    centroids: CentroidsComputed | None
    rows_done: int
    head: int
    completed: RunCompleted | None
    failed: RunFailed | None  # the last RunFailed not followed by a RunResumed


def read_progress(store: EventStore, run_id: UUID) -> tuple[RunProgress, RunWriter]:
    """Replay a run's log into its state and a writer positioned at the next row."""
    state = _Replay()
    head = 0
    for page in store.recorder.read_stream_pages(run_id):
        # Events are replayed in seq order; runs of assignments are accounted as one block.
        start = 0
        for i, ev in enumerate(page):
            if ev.type != AssignmentRecorded.TYPE:
                state.assignments(page[start:i])
                state.event(ev)
                start = i + 1
        state.assignments(page[start:])
        head = page[-1].seq
    if state.started is None:
        from .errors import RunNotFoundError

        raise RunNotFoundError(f"run {run_id} has no RunStarted event")
    progress = RunProgress(
        state.started, state.centroids, state.rows, head, state.completed, state.failed
    )
    writer = RunWriter(
        store,
        run_id,
        state.started,
        head,
        rows_done=state.rows,
        base=state.base,
        has_centroids=state.centroids is not None,
        digest=state.digest,
        sizes=state.sizes,
        n_noise=state.n_noise,
        finished=state.completed is not None,
    )
    return progress, writer


@dataclass
class _Replay:
    """The state ``read_progress`` folds a run's events into."""

    started: RunStarted | None = None
    centroids: CentroidsComputed | None = None
    completed: RunCompleted | None = None
    failed: RunFailed | None = None
    rows: int = 0
    base: int | None = None
    digest: AssignmentDigest = field(default_factory=AssignmentDigest)
    sizes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_noise: int = 0

    def assignments(self, block: list[StoredEvent]) -> None:
        if not block:
            return
        payloads = [ev.payload for ev in block]
        try:
            labels = assignments_from_payloads(payloads)["cluster"]  # any layout (legacy too)
        except EventDecodeError:
            for ev in block:  # name the run and the first seq that does not decode
                decode_stored(ev)
            raise
        # A damaged log must not make the replay count 2^32 clusters (a huge allocation).
        bound = self.started.k if self.started is not None else MAX_REPLAY_CLUSTERS
        over = np.flatnonzero(labels >= bound)
        if len(over):
            bad = block[int(over[0])]
            raise EventDecodeError(
                bad.run_id,
                bad.seq,
                f"AssignmentRecorded cluster {int(labels[over[0]])} is not below k={bound}; "
                "the log is damaged (`clusterstore runs verify` lists what)",
            )
        self.digest.update(b"".join(payloads), len(block))
        counts, n_noise = count_labels(labels)  # labels are int64, -1 for noise
        self.n_noise += n_noise
        self.sizes = np.pad(self.sizes, (0, max(0, counts.shape[0] - self.sizes.shape[0])))
        self.sizes[: counts.shape[0]] += counts
        if self.base is None:
            self.base = block[0].seq - self.rows
        self.rows += len(block)

    def event(self, ev: StoredEvent) -> None:
        event = decode_stored(ev)
        match event:
            case RunStarted():
                self.started = event
            case CentroidsComputed():
                self.centroids = event
            case RunCompleted():
                self.completed = event
            case RunFailed():
                self.failed = event
            case RunResumed():
                self.failed = None
                self.base = ev.seq + 1 - self.rows


def resume_run(
    store: EventStore,
    run_id: UUID,
    *,
    input_digest: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[RunProgress, RunWriter]:
    """Continue an interrupted run: appends RunResumed and returns a writer at the next row."""
    progress, writer = read_progress(store, run_id)
    resume_writer(progress, writer, input_digest=input_digest, batch_size=batch_size)
    return progress, writer


def resume_writer(
    progress: RunProgress,
    writer: RunWriter,
    *,
    input_digest: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> None:
    """The second half of ``resume_run``, for callers that already read the progress (and
    checked their input against it): appends RunResumed and moves the writer to a new
    segment that starts at the next row."""
    run_id = writer.run_id
    if progress.completed is not None:
        raise InputError(f"run {run_id} is already completed; nothing to resume")
    if (
        input_digest
        and progress.started.input_digest
        and (input_digest != progress.started.input_digest)
    ):
        raise InputError(
            f"run {run_id}: the input has changed since the run started (digest "
            f"{input_digest[:12]} != {progress.started.input_digest[:12]}); refusing to resume"
        )
    event = RunResumed(from_row=progress.rows_done, resumed_at=_now(), input_digest=input_digest)
    with deferred_interrupt():
        writer.head = writer.store.append(run_id, [event], expected_seq=writer.head).head
    writer.base = writer.head + 1 - progress.rows_done
    writer.batch_size = batch_size


def _now() -> datetime:
    return datetime.now(UTC)

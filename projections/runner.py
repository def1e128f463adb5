"""The projection runner: catch-up, follow, rebuild, checkpoints.

- **Catch-up** reads the global feed after the projection's checkpoint in batches of
  ``BATCH_EVENTS`` (``eventstore.feed.read_feed_blocks``: set-based reads, bounded memory)
  and applies each batch and advances the checkpoint in the *same* transaction, guarded by
  the previous position: exactly once, and a crash (even SIGKILL) loses at most the
  uncommitted batch, which the next run applies again from the last checkpoint.
- **One runner per projection** (``locks``): a second ``catch_up`` waits until the running
  one has reached the head it wanted (or takes over when that one ends); ``follow`` waits
  for a one-off catch-up to end and refuses a second follower at once; ``rebuild`` refuses
  at once with a message naming the holder. Waits are bounded by the store's lock wait and
  announced (``waits``).
- **Follow** keeps applying new events: it polls; where the database notifies commits
  (PostgreSQL's ``LISTEN``), the store's ``commit_waker`` only wakes it early
  (notifications can be lost).
- **A damaged event isolates its run** (``dead_letter``): an event that does not decode
  makes the projection skip that run from there on and record it, in the batch's
  transaction; every other run goes on. ``on_damage`` hears of each run so skipped.
- **Rebuild** replays the whole log into a new generation of tables that no reader sees,
  creates their secondary indexes after the load, then points the public views at it and
  moves the checkpoint in one transaction; the old generation is dropped afterwards. Readers
  see the old read model until the new one is complete. It runs exactly the code catch-up
  runs, so a rebuild equals incremental catch-up. Where the database allows
  (``rebuild_in_one_transaction``, PostgreSQL) all of it up to the swap is one transaction:
  the assignment table is loaded frozen (``COPY FREEZE``), and a rebuild that fails or is
  killed leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Connection, inspect, update

from clusterstore.eventstore.errors import DatabaseBusyError, EventDecodeError, SchemaError
from clusterstore.eventstore.feed import FeedBlock
from clusterstore.eventstore.runs import ProgressFn
from clusterstore.eventstore.schema import tables_present
from clusterstore.eventstore.store import EventStore

from . import dead_letter, schema
from .base import Checkpoint, Projection, read_checkpoint
from .clusteringresult import ClusteringResultProjection
from .dead_letter import DeadLetter
from .embeddingcluster import EmbeddingClusterProjection
from .locks import LOCK_TTL, RunnerLock, make_lock, row_holder
from .prefetch import prefetched
from .waits import follower_lock_name, refuse_second_follower, wait_for_lock

BATCH_EVENTS = 100_000
POLL_SECONDS = 1.0

DamageFn = Callable[[DeadLetter], None]  # told of each run a projection starts to skip

PROJECTIONS: dict[str, type[Projection]] = {
    cls.name: cls for cls in (ClusteringResultProjection, EmbeddingClusterProjection)
}
NAMES: tuple[str, ...] = tuple(PROJECTIONS)


@dataclass(frozen=True)
class RebuildResult:
    generation: int  # the generation readers see now
    events: int  # events replayed into it
    live_seconds: float  # from the start until readers saw the new generation
    seconds: float  # including dropping the old generation (and, from ``rebuild``, the
    #                 catch-up of what was appended meanwhile)


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    generation: int | None
    checkpoint: int | None
    head: int
    updated_at: datetime | None
    runner: str | None

    @property
    def lag(self) -> int:
        return self.head - (self.checkpoint or 0)

    @property
    def state(self) -> str:
        """``not_built``, ``up_to_date``, ``behind`` or ``ahead_of_log`` (a checkpoint past
        the log's head: the read model claims events the log does not hold, and events
        appended later would be skipped; ``projections rebuild`` repairs it)."""
        if self.checkpoint is None:
            return "not_built"
        if self.lag < 0:
            return "ahead_of_log"
        return "up_to_date" if self.lag == 0 else "behind"


class Runner:
    """One projection's runner on one held connection: lock, checkpoint, batches."""

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        conn: Connection,
        batch_events: int = BATCH_EVENTS,
        on_damage: DamageFn | None = None,
    ):
        self.store = store
        self.batch_events = batch_events
        self.projection = projection
        self.name = projection.name
        self.conn = conn
        self.lock: RunnerLock = make_lock(store, conn, self.name)
        self.on_damage = on_damage
        self.skipped: dict[UUID, DeadLetter] = {}  # the runs skipped in ``self.generation``
        self.generation: int | None = None

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self) -> Checkpoint | None:
        with self.store.transaction(conn=self.conn) as c:
            return read_checkpoint(c, self.name)

    def _advance(self, c: Connection, generation: int, old: int, new: int) -> None:
        t = schema.checkpoints
        result = c.execute(
            update(t)
            .where(t.c.name == self.name, t.c.generation == generation, t.c.position == old)
            .values(position=new, updated_at=datetime.now(UTC))
        )
        if result.rowcount != 1:
            raise DatabaseBusyError(
                f"projection {self.name}: the checkpoint moved under this runner (another "
                "runner?); the batch was rolled back, run the catch-up again"
            )

    def _publish(self, c: Connection, generation: int, position: int) -> None:
        """Point the views at ``generation`` and set the checkpoint, in the caller's txn."""
        self.projection.publish(c, generation)
        t = schema.checkpoints
        values = {
            "generation": generation,
            "version": self.projection.version,
            "position": position,
            "updated_at": datetime.now(UTC),
        }
        if c.execute(update(t).where(t.c.name == self.name).values(**values)).rowcount == 0:
            c.execute(t.insert().values(name=self.name, **values))

    # ------------------------------------------------------------------ building

    def ensure_built(self, on_progress: ProgressFn | None = None) -> Checkpoint:
        """The checkpoint; on first use generation 1 is created (empty); a read model built
        by another layout version is rebuilt. Call with the lock held."""
        cp = self.checkpoint()
        if cp is None:
            with self.store.transaction(write=True, conn=self.conn) as c:
                self.lock.check(c)
                _refuse_foreign_names(c, self.projection)
                self._drop_generations(c, keep=None)
                self.projection.create(c, 1)
                self._publish(c, 1, 0)
        elif cp.version != self.projection.version:
            self.rebuild(on_progress)
        cp = self.checkpoint()
        assert cp is not None
        return cp

    def catch_up(self, on_progress: ProgressFn | None = None) -> int:
        """Apply every event after the checkpoint; returns how many. Call with the lock held."""
        cp = self.ensure_built(on_progress)
        self._load_skipped(cp.generation)
        position = start = cp.position
        while True:
            applied = position
            for blocks in self._batches(after=position):
                new = blocks[-1].last_position
                self._apply(cp.generation, blocks, advance=(position, new))
                if on_progress is not None:
                    on_progress(new - position)
                position = new
            if position == applied:
                return position - start

    def rebuild(self, on_progress: ProgressFn | None = None) -> RebuildResult:
        """Replay the whole log into a new generation and swap it in. Call with the lock
        held. Where the database allows (``rebuild_in_one_transaction``) the generation is
        created, loaded, indexed and swapped in one transaction; an event that does not
        decode rolls that back and the rebuild starts again with a transaction per batch,
        which isolates the event's run (``_apply``; progress is then reported again)."""
        start = time.perf_counter()
        cp = self.checkpoint()
        old = cp.generation if cp is not None else None
        generation = (old or 0) + 1
        target = self.store.max_position()
        position = None
        if self.store.rebuild_in_one_transaction:
            with contextlib.suppress(EventDecodeError):
                position = self._rebuild_in_one_transaction(old, generation, target, on_progress)
        if position is None:
            position = self._rebuild_in_batches(old, generation, target, on_progress)
        live = time.perf_counter() - start
        with self.store.transaction(write=True, conn=self.conn) as c:
            self._drop_generations(c, keep=generation)
        return RebuildResult(generation, position, live, time.perf_counter() - start)

    def _rebuild_in_batches(
        self, old: int | None, generation: int, target: int, on_progress: ProgressFn | None
    ) -> int:
        with self.store.transaction(write=True, conn=self.conn) as c:
            self._create_generation(c, old, generation)
        position = 0
        for blocks in self._feed_until(target):
            self._apply(generation, blocks)
            if on_progress is not None:
                on_progress(blocks[-1].last_position - position)
            position = blocks[-1].last_position
        with self.store.transaction(write=True, conn=self.conn) as c:
            self._swap_in(c, old, generation, position)
        return position

    def _rebuild_in_one_transaction(
        self, old: int | None, generation: int, target: int, on_progress: ProgressFn | None
    ) -> int:
        """The new generation created, loaded (its bulk tables frozen), indexed and
        published in one transaction on the runner's connection; the log is read on
        others. Raises ``EventDecodeError`` (nothing changed) if an event does not decode."""
        letters: dict[UUID, DeadLetter] = {}
        position = 0
        with self.store.transaction(write=True, conn=self.conn) as c:
            self._create_generation(c, old, generation)
            self.projection.fresh_generation = generation
            try:
                for blocks in self._feed_until(target, on_runner=False):
                    cut = dead_letter.from_blocks(self.name, blocks, set(letters))
                    todo = dead_letter.without(blocks, set(letters), cut)
                    self._apply_in(c, generation, todo, cut)
                    letters.update(cut)
                    if on_progress is not None:
                        on_progress(blocks[-1].last_position - position)
                    position = blocks[-1].last_position
            finally:
                self.projection.fresh_generation = None
            self._swap_in(c, old, generation, position)
        self.skipped = letters
        if self.on_damage is not None:
            for letter in letters.values():
                self.on_damage(letter)
        return position

    def _create_generation(self, c: Connection, old: int | None, generation: int) -> None:
        """Drop any generation but the current one, create ``generation`` without indexes."""
        self.lock.check(c)
        self._drop_generations(c, keep=old)
        self.projection.create(c, generation, indexes=False)
        self.generation, self.skipped = generation, {}

    def _swap_in(self, c: Connection, old: int | None, generation: int, position: int) -> None:
        """Index the loaded ``generation`` and point the views and the checkpoint at it."""
        self.lock.check(c)
        self.projection.create_indexes(c, generation)
        if old is None:
            _refuse_foreign_names(c, self.projection)
        self._publish(c, generation, position)

    def _feed_until(self, target: int, *, on_runner: bool = True) -> Iterator[list[FeedBlock]]:
        """The feed from the start up to ``target`` in batches (``_batches``)."""
        position = 0
        while position < target:
            before = position
            for blocks in self._batches(after=position, until=target, on_runner=on_runner):
                yield blocks
                position = blocks[-1].last_position
            if position == before:
                return

    def _load_skipped(self, generation: int) -> None:
        if self.generation != generation:
            with self.store.transaction(conn=self.conn) as c:
                self.skipped = dead_letter.of_generation(c, self.name, generation)
            self.generation = generation

    def _apply(
        self, generation: int, blocks: list[FeedBlock], advance: tuple[int, int] | None = None
    ) -> None:
        """Apply one batch in one transaction (moving the checkpoint ``advance``'s old ->
        new with it), without the runs this generation skips. An event that does not decode
        rolls the batch back, and the batch is applied again without that run's events from
        there on, the run recorded as skipped (``dead_letter``) in the same transaction."""
        skipped = set(self.skipped)
        cut = dead_letter.from_blocks(self.name, blocks, skipped)
        while True:
            todo = dead_letter.without(blocks, skipped, cut)
            try:
                with self._batch_transaction() as c:
                    self._apply_in(c, generation, todo, cut)
                    if advance is not None:
                        self._advance(c, generation, *advance)
            except EventDecodeError as e:
                letter = dead_letter.from_error(self.name, e, todo)
                earlier = cut.get(letter.run_id) if letter is not None else None
                if letter is None or (earlier is not None and earlier.seq <= letter.seq):
                    raise  # not an event of this batch: nothing to isolate
                cut[letter.run_id] = letter
                continue
            break
        self.skipped.update(cut)
        if self.on_damage is not None:
            for letter in cut.values():
                self.on_damage(letter)

    def _apply_in(
        self,
        c: Connection,
        generation: int,
        todo: list[FeedBlock],
        cut: dict[UUID, DeadLetter],
    ) -> None:
        """Apply ``todo`` and record the runs ``cut`` skips, in the caller's transaction."""
        if todo:
            self.projection.apply(c, generation, todo)
        for letter in cut.values():
            dead_letter.record(c, generation, letter)
            self.projection.mark_damaged(
                c,
                generation,
                letter.run_id,
                letter.position,
                f"damaged at seq {letter.seq}: {letter.reason}",
            )

    @contextmanager
    def _batch_transaction(self) -> Iterator[Connection]:
        """The write transaction of one batch, under this runner's lock. It commits without
        waiting for the WAL flush where the database allows (PostgreSQL): a batch lost in a
        server crash is lost together with the checkpoint it advanced, and applied again
        from the one before (the generation swap and the setup commit synchronously)."""
        with self.store.transaction(write=True, conn=self.conn, synchronous_commit=False) as c:
            self.lock.check(c)
            yield c

    def _batches(
        self, *, after: int, until: int | None = None, on_runner: bool = True
    ) -> Iterator[list[FeedBlock]]:
        """The feed after ``after`` in batches (until a short batch, or ``until``). While one
        batch is applied, a thread reads the next on its own connection (the log is
        immutable, so reading ahead is safe); at most three batches are in memory. The
        first batch is read on the runner's connection unless ``on_runner`` is False (the
        runner's connection is inside a transaction the read must not end)."""

        def read(position: int, conn: Connection | None = None) -> list[FeedBlock]:
            return self.store.read_feed_blocks(
                after=position,
                max_events=self.batch_events,
                assignments=self.projection.reads_assignments,
                conn=conn,
                mark_damage=True,
            )

        def more(blocks: list[FeedBlock]) -> bool:
            full = blocks[-1].last_position - blocks[0].position + 1 >= self.batch_events
            return full and (until is None or blocks[-1].last_position < until)

        first = read(after, self.conn if on_runner else None)
        if not first:
            return
        if not more(first):
            yield first
            return
        yield from prefetched(read, first, more)

    def _drop_generations(self, c: Connection, *, keep: int | None) -> None:
        """Drop every generation table of this projection except ``keep``'s."""
        stale = [
            name
            for name in inspect(c).get_table_names()
            if (g := self.projection.generation_of(name)) is not None and g != keep
        ]
        self.projection.drop_tables(c, stale)
        dead_letter.forget_generations(c, self.name, keep=keep)


# ---------------------------------------------------------------------------- public API


def projections_for(store: EventStore, names: Sequence[str] | None) -> list[Projection]:
    unknown = [n for n in names or () if n not in PROJECTIONS]
    if unknown:
        raise SchemaError(f"unknown projection {unknown[0]!r}; known: {', '.join(NAMES)}")
    return [PROJECTIONS[n](store) for n in (names or NAMES)]


def catch_up(
    store: EventStore,
    names: Sequence[str] | None = None,
    *,
    on_progress: ProgressFn | None = None,
    wait: float | None = None,
    batch_events: int = BATCH_EVENTS,
    on_damage: DamageFn | None = None,
) -> dict[str, int]:
    """Bring the projections up to date with the log's head; returns events applied per
    projection. If another runner holds a projection, wait until it has reached the head
    this call saw, or until it ends and this call can take over (``waits``: bounded by
    ``wait`` seconds, default the store's lock wait; a follower is left to project the
    rest). A run with an event that does not decode is skipped from there on, recorded, and
    reported to ``on_damage``; it does not stop the other runs (``dead_letter``)."""
    applied: dict[str, int] = {}
    with store.connection() as conn:
        ensure_tables(store, conn)
        for projection in projections_for(store, names):
            runner = Runner(store, projection, conn, batch_events, on_damage)
            target = store.max_position()
            if not _acquire_or_wait(runner, target, wait):
                applied[projection.name] = 0
                continue
            try:
                applied[projection.name] = runner.catch_up(on_progress)
            finally:
                runner.lock.release()
    return applied


def catch_up_all(
    store: EventStore, *, quiet: bool = True, on_progress: ProgressFn | None = None
) -> None:
    """Bring every projection up to date (creating the read-model tables on first use).
    ``quiet=False`` writes one summary line per projection that applied events to stderr."""
    applied = catch_up(store, on_progress=on_progress)
    if not quiet:
        for name, n in applied.items():
            if n:
                sys.stderr.write(f"projection {name}: applied {n:,} events\n")


def rebuild(
    store: EventStore,
    names: Sequence[str] | None = None,
    *,
    on_progress: ProgressFn | None = None,
    batch_events: int = BATCH_EVENTS,
    on_damage: DamageFn | None = None,
) -> dict[str, RebuildResult]:
    """Rebuild the projections from the whole log, each into a new generation swapped in
    atomically, then catch up what was appended meanwhile. Refuses if another runner holds
    a projection."""
    done: dict[str, RebuildResult] = {}
    with store.connection() as conn:
        ensure_tables(store, conn)
        for projection in projections_for(store, names):
            with _holding(Runner(store, projection, conn, batch_events, on_damage)) as runner:
                start = time.perf_counter()
                result = runner.rebuild(on_progress)
                runner.catch_up(on_progress)
                seconds = time.perf_counter() - start
                done[projection.name] = replace(result, seconds=seconds)
    return done


def follow(
    store: EventStore,
    names: Sequence[str] | None = None,
    *,
    on_progress: ProgressFn | None = None,
    poll: float = POLL_SECONDS,
    stop: Callable[[], bool] | None = None,
    batch_events: int = BATCH_EVENTS,
    on_damage: DamageFn | None = None,
    yield_to_follower: bool = False,
) -> None:
    """Keep the projections up to date until ``stop()`` is true (or Ctrl-C / SIGTERM in the
    CLI): catch up, then wait for new events (poll; PostgreSQL notifications wake it early).
    Refuses if another follower holds a projection; waits for a one-off catch-up.

    ``yield_to_follower`` (a writing command's own follower, ``alongside``): take no
    follower lock, refuse (``DatabaseBusyError``) if any runner holds a projection, and
    stop as soon as a follower starts (it waits for this runner's lock, then carries on),
    so a ``catch-up --follow`` started meanwhile is never refused because of it."""
    with store.connection() as conn, ExitStack() as stack:
        ensure_tables(store, conn)
        runners: list[Runner] = []
        locks: list[RunnerLock] = []  # the main and the follower lock of each projection
        followers: list[RunnerLock] = []  # with yield_to_follower: whose start ends this
        for p in projections_for(store, names):
            runner = Runner(store, p, conn, batch_events, on_damage)
            if yield_to_follower:
                runners.append(stack.enter_context(_holding(runner)))
                locks.append(runner.lock)
                followers.append(make_lock(store, conn, follower_lock_name(runner.name)))
                continue
            follower = stack.enter_context(_following(runner))
            locks.append(follower)
            if not _acquire_as_follower(runner, follower, stop):
                return  # stopped while waiting for a one-off catch-up
            stack.callback(runner.lock.release)
            runners.append(runner)
            locks.append(runner.lock)
        waker = stack.enter_context(store.commit_waker())
        last_beat = time.monotonic()
        while True:
            if time.monotonic() - last_beat > LOCK_TTL.total_seconds() / 4:
                _heartbeat(store, conn, locks)  # also between long catch-ups
                last_beat = time.monotonic()
            applied = sum(r.catch_up(on_progress) for r in runners)
            if stop is not None and stop():
                return
            if any(f.holder() is not None for f in followers):
                return  # a follower started: it takes over from this runner's checkpoint
            if applied == 0:
                waker.wait(poll)


def status(store: EventStore) -> list[ProjectionStatus]:
    """Each projection's generation, checkpoint, the log's head and who is running it."""
    head = store.max_position()
    out = []
    with store.transaction() as c:
        names = tables_present(c, {schema.checkpoints.name, schema.locks.name})
        for name in NAMES:
            cp = read_checkpoint(c, name) if schema.checkpoints.name in names else None
            if store.has_session_locks:
                runner = store.session_lock_holder(c, name)
            else:
                runner = row_holder(c, name) if schema.locks.name in names else None
            out.append(
                ProjectionStatus(
                    name,
                    cp.generation if cp else None,
                    cp.position if cp else None,
                    head,
                    cp.updated_at if cp else None,
                    runner,
                )
            )
    return out


# ---------------------------------------------------------------------------- helpers


def ensure_tables(store: EventStore, conn: Connection) -> None:
    """Create the fixed read-model tables on first use (concurrent callers are serialised)."""
    with store.transaction(write=True, conn=conn) as c:
        store.lock_setup(c)
        schema.metadata.create_all(c, checkfirst=True)


def _refuse_foreign_names(c: Connection, projection: Projection) -> None:
    insp = inspect(c)
    taken = set(insp.get_table_names()) | set(insp.get_view_names())
    clash = [v for v in projection.views if v in taken]
    if clash:
        raise SchemaError(
            f"the database already has a table or view named {clash[0]!r} that clusterstore "
            f"did not create; the {projection.name} read model needs that name (rename it, or "
            "keep the store in another database)"
        )


def _position(runner: Runner) -> int | None:
    """The projection's checkpoint, if it is of this code's layout version."""
    cp = runner.checkpoint()
    return cp.position if cp is not None and cp.version == runner.projection.version else None


def _acquire_or_wait(runner: Runner, target: int, wait: float | None) -> bool:
    """Take the runner's lock (True), or return False once the holder reached ``target``
    (or, if the holder is a follower, once the lock wait is over: it projects the rest)."""
    follower = make_lock(runner.store, runner.conn, follower_lock_name(runner.name))
    return wait_for_lock(
        runner.store,
        runner.name,
        runner.lock,
        lambda: _position(runner),
        done=lambda position: position is not None and position >= target,
        follower=follower.holder,
        bound=wait,
    )


@contextmanager
def _following(runner: Runner) -> Iterator[RunnerLock]:
    """Hold the follower lock of the runner's projection (refused at once if another
    follower holds it)."""
    lock = make_lock(runner.store, runner.conn, follower_lock_name(runner.name))
    if not lock.try_acquire():
        raise refuse_second_follower(runner.name, lock.holder())
    try:
        yield lock
    finally:
        lock.release()


def _acquire_as_follower(
    runner: Runner, follower: RunnerLock, stop: Callable[[], bool] | None
) -> bool:
    """The runner's lock for a follower: waits for a one-off catch-up to end (bounded by
    its progress, ``waits``); False if ``stop()`` came first."""
    return wait_for_lock(
        runner.store,
        runner.name,
        runner.lock,
        lambda: _position(runner),
        done=lambda position: False,
        stop=stop,
        heartbeat=lambda: _heartbeat(runner.store, runner.conn, [follower]),
    )


def _heartbeat(store: EventStore, conn: Connection, locks: Sequence[RunnerLock]) -> None:
    """Renew the locks (a lock row's heartbeat; a session lock needs none)."""
    for lock in locks:
        with store.transaction(write=True, conn=conn) as c:
            lock.check(c)


@contextmanager
def _holding(runner: Runner) -> Iterator[Runner]:
    if not runner.lock.try_acquire():
        raise DatabaseBusyError(
            f"projection {runner.name} is already being updated by another runner "
            f"({runner.lock.holder() or 'unknown'}); stop it first, or wait for it to finish "
            "(`clusterstore projections status` shows it)"
        )
    try:
        yield runner
    finally:
        runner.lock.release()


holding = _holding  # the runner with its lock held (``lookup.set_lookup_index`` uses it)

"""A damaged event isolates its run, not the read models (dead-lettered runs).

When a projection meets an event it cannot decode (bytes changed around the store, a block
of assignments that does not add up), or one that decodes but holds a value its tables
cannot store (``UnstorableEventError``: a NUL character in a text, an integer beyond its
column's range, written through the library's own appends), it does not stop: it applies
every event of that run *before* the damaged one, skips the run's damaged event and every
later event of the run, records the run in ``pj_dead_letter`` (projection, generation,
run, seq, global position, reason) and marks it in its own tables
(``Projection.mark_damaged``: ``clusteringresult`` shows status ``damaged`` with the reason
as its error; ``embeddingcluster`` hides the run).
All of it happens in the transaction of the batch that met the event, with the
checkpoint's move, so the checkpoint keeps moving for every other run, and no healthy event
is applied twice or skipped. Which events are applied depends only on the log (everything
of the run before its first event that does not decode), never on batch boundaries, so a
rebuild equals incremental catch-up here too.

This follows the dead-letter idea of event stores such as Marten (a failed event is
recorded with its projection and sequence and skipped), per *run* rather than per event:
a run's read-model rows are a fold of all its events, so applying the events after a hole
would show a run that the log does not hold.

The repair: the log is append-only, so a damaged event is put back by an operator (the
row restored from a backup of the database, the payload rewritten to the bytes
``runs verify`` expects), then ``clusterstore projections rebuild`` replays the whole log
into a new generation, which has no dead letters unless the event is still damaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, delete, select

from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.feed import FeedBlock
from clusterstore.eventstore.schema import tables_present, utc
from clusterstore.eventstore.store import EventStore
from clusterstore.eventstore.vocabulary import timestamp

from . import schema


@dataclass(frozen=True)
class DeadLetter:
    """A run a projection skips from ``seq`` (at global ``position``) on, and why."""

    projection: str
    run_id: UUID
    seq: int
    position: int
    reason: str
    recorded_at: datetime

    def line(self) -> str:
        return (
            f"run {self.run_id} is damaged at seq {self.seq} (log position {self.position}): "
            f"{self.reason}; {self.projection} skips the run from there"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.projection,
            "run_id": str(self.run_id),
            "seq": self.seq,
            "position": self.position,
            "reason": self.reason,
            "recorded_at": timestamp(self.recorded_at),
        }


REPAIR = (
    "repair the event (restore its row from a backup), then `clusterstore projections "
    "rebuild` brings the run back"
)


def from_error(
    projection: str, error: EventDecodeError, blocks: Iterable[FeedBlock]
) -> DeadLetter | None:
    """The dead letter for a decode error raised while applying ``blocks``, or None when
    the error names no event among them (then it is not a damaged event of this batch)."""
    if error.run_id is None or error.seq is None:
        return None
    for b in blocks:
        if b.run_id == error.run_id and b.first_seq <= error.seq <= b.last_seq:
            position = b.position + error.seq - b.first_seq
            return _letter(projection, b.run_id, error.seq, position, error.reason)
    return None


def from_block(projection: str, block: FeedBlock) -> DeadLetter | None:
    """The dead letter for a block the feed could not read whole (``FeedBlock.damage``)."""
    if block.damage is None:
        return None
    return _letter(projection, block.run_id, block.first_seq, block.position, block.damage)


def from_blocks(
    projection: str, blocks: list[FeedBlock], skipped: set[UUID]
) -> dict[UUID, DeadLetter]:
    """The dead letter of each run not in ``skipped`` for its first block in ``blocks``
    the feed could not read whole."""
    cut: dict[UUID, DeadLetter] = {}
    for b in blocks:
        letter = from_block(projection, b)
        if letter is not None and b.run_id not in skipped and b.run_id not in cut:
            cut[b.run_id] = letter
    return cut


def _letter(projection: str, run_id: UUID, seq: int, position: int, reason: str) -> DeadLetter:
    return DeadLetter(projection, run_id, seq, position, reason, datetime.now(UTC))


def without(
    blocks: list[FeedBlock], skipped: set[UUID], cut: dict[UUID, DeadLetter]
) -> list[FeedBlock]:
    """``blocks`` without the runs in ``skipped`` and, for each run in ``cut``, without its
    events from the dead letter's seq on (the events before it are kept)."""
    out = []
    for b in blocks:
        if b.run_id in skipped:
            continue
        letter = cut.get(b.run_id)
        if letter is None or b.last_seq < letter.seq:
            out.append(b)
        elif b.first_seq < letter.seq:
            out.append(truncated(b, letter.seq))
    return out


def truncated(block: FeedBlock, seq: int) -> FeedBlock:
    """The part of ``block`` before ``seq`` (``block.first_seq < seq <= block.last_seq``)."""
    others = [ev for ev in block.others if ev.seq < seq]
    data = block.assignments
    if data is not None:
        kept = int((block.assignment_seqs() < seq).sum())
        data = data[: kept * block.width]
    return block._replace(last_seq=seq - 1, others=others, assignments=data, damage=None)


# ---------------------------------------------------------------------------- the table


def record(conn: Connection, generation: int, letter: DeadLetter) -> None:
    t = schema.dead_letters
    conn.execute(
        t.insert().values(
            name=letter.projection,
            generation=generation,
            run_id=letter.run_id,
            seq=letter.seq,
            position=letter.position,
            reason=letter.reason,
            recorded_at=letter.recorded_at,
        )
    )


def forget_generations(conn: Connection, name: str, *, keep: int | None) -> None:
    """Drop the dead letters of every generation of ``name`` but ``keep``'s."""
    t = schema.dead_letters
    stmt = delete(t).where(t.c.name == name)
    if keep is not None:
        stmt = stmt.where(t.c.generation != keep)
    conn.execute(stmt)


def of_generation(conn: Connection, name: str, generation: int) -> dict[UUID, DeadLetter]:
    t = schema.dead_letters
    rows = conn.execute(
        select(t.c.run_id, t.c.seq, t.c.position, t.c.reason, t.c.recorded_at).where(
            t.c.name == name, t.c.generation == generation
        )
    )
    return {
        r.run_id: DeadLetter(
            name, r.run_id, int(r.seq), int(r.position), r.reason, utc(r.recorded_at)
        )
        for r in rows
    }


def dead_letters(store: EventStore, run_id: UUID | None = None) -> list[DeadLetter]:
    """The runs each projection skips in the generation readers see now (all runs, or
    ``run_id``'s), in log order. Only reads: a store whose read models never met a damaged
    event (or were never built) has none."""
    with store.transaction() as conn:
        wanted = {schema.dead_letters.name, schema.checkpoints.name}
        if tables_present(conn, wanted) != wanted:
            return []
        cp = schema.checkpoints
        out: list[DeadLetter] = []
        for name, generation in conn.execute(select(cp.c.name, cp.c.generation)).all():
            found = of_generation(conn, name, int(generation))
            out += [d for d in found.values() if run_id is None or d.run_id == run_id]
    return sorted(out, key=lambda d: (d.position, d.projection))


def by_run(letters: Iterable[DeadLetter]) -> dict[UUID, list[DeadLetter]]:
    out: dict[UUID, list[DeadLetter]] = {}
    for d in letters:
        out.setdefault(d.run_id, []).append(d)
    return out


def first_by_run(letters: Iterable[DeadLetter]) -> dict[UUID, DeadLetter]:
    """Each skipped run's earliest dead letter (the projections may meet different events)."""
    return {run: min(group, key=lambda d: d.seq) for run, group in by_run(letters).items()}


def damage_json(letter: DeadLetter | None) -> dict[str, Any] | None:
    """A run's ``damage`` in ``runs list``/``show`` JSON."""
    if letter is None:
        return None
    return {"seq": letter.seq, "position": letter.position, "reason": letter.reason}


def run_damage(store: EventStore, run_id: UUID) -> tuple[int, str] | None:
    """(seq, reason) where the read models skip ``run_id`` from, or None (for ``verify``:
    ``audit.ReadModelCheck.damaged``)."""
    found = first_by_run(dead_letters(store, run_id)).get(run_id)
    return None if found is None else (found.seq, found.reason)

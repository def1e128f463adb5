"""The ``clusteringresult`` read model: one row per run, with its status.

Columns: ``id`` (the run id, or for a run imported from a legacy database the legacy
clustering-result id from ``RunStarted.legacy_id``, so old SQL keeps finding it),
``run_id`` (always the store's run id), model, algorithm, params, k, n_embeddings,
n_assignments, status (``running``, ``completed``, ``failed``, or ``damaged``: the run is
skipped from an event that does not decode, or that the row cannot hold (``unstorable``),
on, ``dead_letter``), error, started_at,
finished_at, duration (seconds), n_noise (the assignments labelled -1, noise, from
``RunCompleted``; NULL until the run completes).

Status follows the run's lifecycle events in log order, as
``eventstore.lifecycle.transition`` defines it: ``RunFailed`` makes it failed (with the
error and the time it failed), ``RunResumed`` running again (error cleared), and
``RunCompleted`` completed. ``n_assignments`` counts every assignment event of the run,
across resumed segments. This projection never reads assignment payloads: the feed tells it
how many there are.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import BigInteger, Connection, Integer, Table, inspect, select, update

from clusterstore.eventstore import EventStore, StoredEvent
from clusterstore.eventstore.errors import UnstorableEventError
from clusterstore.eventstore.events import (
    AssignmentRecorded,
    Event,
    RunCompleted,
    RunResumed,
    RunStarted,
)
from clusterstore.eventstore.feed import FeedBlock
from clusterstore.eventstore.lifecycle import transition
from clusterstore.eventstore.schema import utc as _utc
from clusterstore.eventstore.store import decode_stored
from clusterstore.eventstore.vocabulary import duration_s

from .base import Projection, read_checkpoint
from .schema import checkpoints, cr_tables, ec_tables

DAMAGED = "damaged"  # the status of a run skipped from a damaged event on (dead_letter)

COLUMNS = (
    "id",
    "run_id",
    "model",
    "algorithm",
    "params",
    "k",
    "n_embeddings",
    "n_assignments",
    "status",
    "error",
    "started_at",
    "finished_at",
    "duration",
    "n_noise",
)


class ClusteringResultProjection(Projection):
    name: ClassVar[str] = "clusteringresult"
    version: ClassVar[int] = 2  # 2: n_noise
    reads_assignments: ClassVar[bool] = False
    views: ClassVar[tuple[str, ...]] = ("clusteringresult",)

    def tables(self, generation: int) -> list[Table]:
        return [cr_tables(generation).results]

    def publish(self, conn: Connection, generation: int) -> None:
        table = cr_tables(generation).results.name
        body = f"SELECT {', '.join(COLUMNS)} FROM {table}"
        self.store.replace_view(conn, "clusteringresult", body)

    def apply(self, conn: Connection, generation: int, blocks: list[FeedBlock]) -> None:
        t = cr_tables(generation).results
        first_seen: dict[UUID, int] = {}
        counts: Counter[UUID] = Counter()
        for block in blocks:
            first_seen.setdefault(block.run_id, block.position)
            counts[block.run_id] += block.n_assignments
        conn.execute(
            self.insert(t).on_conflict_do_nothing(index_elements=["run_id"]),
            [
                {
                    "run_id": run,
                    "id": run,
                    "n_assignments": 0,
                    "status": "running",
                    "first_position": position,
                }
                for run, position in first_seen.items()
            ],
        )
        for block in blocks:
            for ev in block.others:
                if ev.type == AssignmentRecorded.TYPE:
                    decode_stored(
                        ev
                    )  # a non-canonical (e.g. older-version) assignment: validate it
                    counts[ev.run_id] += 1
                else:
                    self._apply_event(conn, t, ev)
        for run, n in counts.items():
            if n:
                conn.execute(
                    update(t).where(t.c.run_id == run).values(n_assignments=t.c.n_assignments + n)
                )

    def mark_damaged(
        self, conn: Connection, generation: int, run_id: UUID, position: int, reason: str
    ) -> None:
        """The run's row says ``damaged``, with the reason as its error (a row is made if
        the damaged event was the run's first)."""
        t = cr_tables(generation).results
        conn.execute(
            self.insert(t).on_conflict_do_nothing(index_elements=["run_id"]),
            [
                {
                    "run_id": run_id,
                    "id": run_id,
                    "n_assignments": 0,
                    "status": DAMAGED,
                    "first_position": position,
                }
            ],
        )
        conn.execute(update(t).where(t.c.run_id == run_id).values(status=DAMAGED, error=reason))

    def _apply_event(self, conn: Connection, t: Table, ev: StoredEvent) -> None:
        event = decode_stored(ev)
        problem = unstorable(event)
        if problem is not None:  # the run is skipped from here (``dead_letter``)
            raise UnstorableEventError(ev.run_id, ev.seq, problem)
        values: dict[str, Any]
        match event:
            case RunStarted():
                values = {
                    "id": event.legacy_id or ev.run_id,
                    "model": event.model,
                    "algorithm": event.algorithm,
                    "params": event.params,
                    "k": event.k,
                    "dim": event.dim,
                    "seed": event.seed,
                    "n_embeddings": event.n_embeddings,
                    "started_at": _utc(event.started_at),
                    "status": "running",
                }
            case _:
                change = transition(event)
                if change is None:
                    return
                end = change.finished_at
                values = {
                    "status": change.status,
                    "error": change.error,
                    "finished_at": None if end is None else _utc(end),
                    "duration": None if end is None else self._duration(conn, t, ev.run_id, end),
                }
                if isinstance(event, RunCompleted | RunResumed):  # noise is known at the end
                    values["n_noise"] = event.n_noise if isinstance(event, RunCompleted) else None
        conn.execute(update(t).where(t.c.run_id == ev.run_id).values(**values))

    @staticmethod
    def _duration(conn: Connection, t: Table, run_id: UUID, end: datetime) -> float | None:
        started = conn.execute(select(t.c.started_at).where(t.c.run_id == run_id)).scalar()
        return duration_s(started, end)  # the vocabulary's one definition


def unstorable(event: Event) -> str | None:
    """Why the row cannot hold a field of ``event`` that it stores in a column of the same
    name, or None: a NUL character in text (PostgreSQL refuses it) or an integer beyond the
    column's range (PostgreSQL refuses it; SQLite's driver overflows past 64 bits). Judged
    by the declared column, so every backend skips the same runs."""
    columns = cr_tables(1).results.c  # every generation's columns are the same
    for name in event.__struct_fields__:
        if name not in columns or name == "params":  # JSON escapes any text
            continue
        value = getattr(event, name)
        kind = columns[name].type
        if isinstance(value, str) and "\x00" in value:
            return (
                f"{event.NAME} {name} holds a NUL character (U+0000), which the read models "
                "cannot store"
            )
        if isinstance(value, int) and isinstance(kind, Integer):
            bits = 64 if isinstance(kind, BigInteger) else 32
            if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                return (
                    f"{event.NAME} {name} {value} is beyond the {bits}-bit integers the read "
                    "models store"
                )
    return None


CHECKED = ("id", "model", "k", "status", "n_assignments", "n_noise")  # what verify compares


def projected_run(store: EventStore, run_id: UUID) -> dict[str, Any] | None:
    """What the read models hold for a run, for ``verify`` (``audit.ReadModelCheck``):
    None while ``clusteringresult`` has not been brought past the run's last commit (it
    cannot be judged yet), else ``{"row": <the run's clusteringresult columns CHECKED, or
    None if it has no row>, "embeddingcluster": <True if that projection's checkpoint is
    past the run's last commit too>}``. One short read transaction."""
    last = store.run_last_position(run_id)
    if last is None:
        return None
    with store.transaction() as conn:
        if not inspect(conn).has_table(checkpoints.name):
            return None
        cr = read_checkpoint(conn, ClusteringResultProjection.name)
        if cr is None or cr.position < last:
            return None
        ec = read_checkpoint(conn, "embeddingcluster")
        t = cr_tables(cr.generation).results
        row = conn.execute(select(*(t.c[c] for c in CHECKED)).where(t.c.run_id == run_id)).first()
        covered = ec is not None and ec.position >= last
        result_id, sizes = _ec_run(conn, ec.generation, run_id) if covered and ec else (None, None)
    return {
        "row": None if row is None else dict(row._mapping),
        "embeddingcluster": covered,
        "result_id": result_id,
        "sizes": sizes,
    }


def _ec_run(
    conn: Connection, generation: int, run_id: UUID
) -> tuple[UUID | None, dict[int, int] | None]:
    """The run's ``result_id`` and its cluster sizes (cluster -> size, noise left out) in
    ``embeddingcluster``'s tables; (None, None) when the run has no row there."""
    t = ec_tables(generation)
    run = conn.execute(
        select(t.runs.c.run_key, t.runs.c.result_id).where(t.runs.c.run_id == run_id)
    ).first()
    if run is None:
        return None, None
    c = t.clusters.c
    sizes = conn.execute(
        select(c.cluster, c.size).where(c.run_key == run.run_key, c.cluster >= 0)
    ).all()
    return run.result_id, {int(k): int(n) for k, n in sizes if n}

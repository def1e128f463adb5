"""Read models left behind the log, told to whoever reads them.

``cluster``, ``record``, ``assign``, ``runs resume`` and ``import-legacy`` end by catching
the read models up. When that step is interrupted (Ctrl-C, a kill, a lost connection), the
run is complete in the log but missing from ``embeddingcluster`` and shown as running in
``clusteringresult``, and nothing moves the checkpoint until someone catches up.
``read_models_behind`` tells that state apart from the ordinary lag of a run still being
written: some projection is behind, no runner is working on it, and a *finished* run (its
RunCompleted or RunFailed) lies past its checkpoint. Read models never built (a store
written through the low-level API only; the CLI and ``clusterstore.open`` build them when
they create a store) are ``not_built`` in ``projections status``, not warned about.
Commands that read the read models warn with it; ``projections status`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import and_, func, select

from clusterstore.eventstore import schema as log
from clusterstore.eventstore.events import RunCompleted, RunFailed
from clusterstore.eventstore.store import EventStore

from .runner import ProjectionStatus, status

FIX = "`clusterstore projections catch-up` brings them up to date"
SHOWN_RUNS = 3  # run ids a warning names


@dataclass(frozen=True)
class Behind:
    """Projections behind the log with no runner at work, and the finished runs they miss."""

    projections: list[ProjectionStatus]
    runs: list[UUID]  # finished runs past the lowest of those checkpoints, in log order

    @property
    def head(self) -> int:
        return self.projections[0].head

    def line(self) -> str:
        lags = ", ".join(f"{s.name} by {s.lag:,} events" for s in self.projections)
        n = len(self.runs)
        shown = ", ".join(str(r) for r in self.runs[:SHOWN_RUNS])
        more = f" and {n - SHOWN_RUNS} more" if n > SHOWN_RUNS else ""
        return (
            f"the read models are behind the log ({lags}; log head {self.head:,}): "
            f"{n} finished run{'s are' if n != 1 else ' is'} not in them ({shown}{more}), "
            f"as an interrupted projection step leaves them; {FIX}"
        )


def read_models_behind(store: EventStore) -> Behind | None:
    """The read models' lag when a finished run is missing from them and no runner is
    catching up (see the module docstring), else None. Only reads."""
    behind = [s for s in status(store) if s.state == "behind" and s.runner is None]
    if not behind:
        return None
    runs = finished_after(store, min(s.checkpoint or 0 for s in behind))
    return Behind(behind, runs) if runs else None


def finished_after(store: EventStore, position: int) -> list[UUID]:
    """Runs whose RunCompleted or RunFailed lies past global ``position``, in log order:
    the last event of its commit, so one primary-key lookup per commit past ``position``."""
    c, e = log.commits, log.events
    with store.transaction() as conn:
        first = conn.execute(
            select(func.max(c.c.position)).where(c.c.position <= position)
        ).scalar()
        rows = conn.execute(
            select(c.c.run_id)
            .select_from(
                c.join(
                    e,
                    and_(e.c.run_id == c.c.run_id, e.c.seq == c.c.first_seq + c.c.count - 1),
                )
            )
            .where(
                c.c.position >= (first or 0),
                c.c.position + c.c.count - 1 > position,
                e.c.type.in_([RunCompleted.TYPE, RunFailed.TYPE]),
            )
            .order_by(c.c.position)
        ).all()
    return list(dict.fromkeys(r[0] for r in rows))

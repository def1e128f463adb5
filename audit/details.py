"""Everything ``runs show`` says about one run: its summary, parameters, centroids,
the cluster sizes the log holds and the integrity state (a full ``verify`` pass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from clusterstore.eventstore import CentroidsComputed, EventStore
from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.store import decode_stored
from clusterstore.eventstore.vocabulary import median

from ._log import PAGE_SIZE, ProgressFn, events_at
from .summary import RunSummary, summarize_run
from .verify import ReadModelCheck, VerifyReport, verify_run


@dataclass(frozen=True)
class RunDetails:
    summary: RunSummary
    centroids: CentroidsComputed | None
    integrity: VerifyReport

    @property
    def cluster_sizes(self) -> list[int]:
        return self.integrity.cluster_sizes

    @property
    def n_noise(self) -> int:
        """Assignments labelled -1 (noise) in the log: in no cluster, not in k."""
        return self.integrity.n_noise

    def to_json(self) -> dict[str, Any]:
        s = self.summary.started
        c = self.centroids
        return {
            **self.summary.to_json(),
            "n_noise": self.n_noise,
            "dim": s.dim if s else None,
            "seed": s.seed if s else None,
            "params": s.params if s else None,
            "input_digest": s.input_digest if s else None,
            "input_path": s.input_path if s else None,
            "assignment_digest": self.integrity.recorded_digest,
            "error_type": self.summary.failed.error_type if self.summary.failed else None,
            "centroids": None
            if c is None
            else {
                "k": c.k,
                "dim": c.dim,
                "objective": c.objective,
                "iterations": c.iterations,
                "train_s": c.train_seconds,
            },
            "cluster_sizes": self.cluster_sizes,
            "median_cluster_size": median(self.cluster_sizes),
            "integrity": self.integrity.to_json(),
        }


def run_details(
    store: EventStore,
    run_id: UUID,
    *,
    read_model: ReadModelCheck | None = None,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> RunDetails:
    """The run's summary and a full ``verify`` pass (against ``read_model`` if given)."""
    summary = summarize_run(store, run_id)
    return RunDetails(
        summary=summary,
        centroids=_centroids(store, run_id),
        integrity=verify_run(
            store, run_id, read_model=read_model, page_size=page_size, on_progress=on_progress
        ),
    )


def _centroids(store: EventStore, run_id: UUID) -> CentroidsComputed | None:
    """CentroidsComputed, which the lifecycle puts at seq 2 (read by key)."""
    ev = events_at(store, [(run_id, 2)]).get((run_id, 2))
    if ev is None or ev.type != CentroidsComputed.TYPE:
        return None
    try:
        event = decode_stored(ev)
    except EventDecodeError:
        return None  # verify reports it
    return event if isinstance(event, CentroidsComputed) else None

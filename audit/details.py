"""Everything ``runs show`` says about one run: its summary, parameters, centroids, its
counts and cluster sizes, and, when asked for, its integrity (a full ``verify`` pass).

Without the check, a completed run is described by what its RunCompleted recorded when it
was written (count, digest, cluster sizes, noise), read by key: no pass over its
assignments, so it costs the same for a run of 10 or 10M. ``integrity`` is then None and
nothing claims the run was checked. A run without a (decodable) RunCompleted recorded no
such summary: its counts and sizes can only come from reading its log, so it gets the full
pass, and since the pass checks the log as it reads it, its result is reported too."""

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
    integrity: VerifyReport | None  # None: not checked (the counts are RunCompleted's)

    @property
    def cluster_sizes(self) -> list[int]:
        """Counted from the log when checked, else as RunCompleted recorded them."""
        if self.integrity is not None:
            return self.integrity.cluster_sizes
        completed = self.summary.completed
        return list(completed.cluster_sizes) if completed is not None else []

    @property
    def n_noise(self) -> int:
        """Assignments labelled -1 (noise): in no cluster, not in k."""
        if self.integrity is not None:
            return self.integrity.n_noise
        completed = self.summary.completed
        return completed.n_noise if completed is not None else 0

    @property
    def n_assignments(self) -> int:
        if self.integrity is not None:
            return self.integrity.n_assignments
        return self.summary.n_assignments

    @property
    def recorded_digest(self) -> str | None:
        """The assignment digest RunCompleted recorded (None: no RunCompleted)."""
        completed = self.summary.completed
        return completed.digest if completed is not None else None

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
            "assignment_digest": self.recorded_digest,
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
            "integrity": None if self.integrity is None else self.integrity.to_json(),
        }


def run_details(
    store: EventStore,
    run_id: UUID,
    *,
    read_model: ReadModelCheck | None = None,
    verify: bool = True,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> RunDetails:
    """The run's summary and a full ``verify`` pass (against ``read_model`` if given).
    With ``verify=False`` a completed run is not read past its RunStarted, CentroidsComputed
    and RunCompleted (``integrity`` is None); a run without RunCompleted is checked anyway."""
    summary = summarize_run(store, run_id)
    integrity = None
    if verify or summary.completed is None:
        integrity = verify_run(
            store, run_id, read_model=read_model, page_size=page_size, on_progress=on_progress
        )
    return RunDetails(summary=summary, centroids=_centroids(store, run_id), integrity=integrity)


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

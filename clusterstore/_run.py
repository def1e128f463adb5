"""``Run``: what the API returns for a run, a view of the audit layer's ``RunSummary``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from clusterstore.audit.summary import RunSummary, Status
from clusterstore.eventstore.vocabulary import timestamp


@dataclass(frozen=True)
class Run:
    """One run of the store, as it was when it was read (``store.run(run)`` reads it again).

    Every attribute comes from the run's ``summary`` (``audit.RunSummary``: its RunStarted,
    its last event and its assignment count). ``cluster_sizes`` and ``assignment_digest``
    are those RunCompleted recorded (None until the run completes).
    """

    summary: RunSummary

    @property
    def run_id(self) -> UUID:
        return self.summary.run_id

    @property
    def status(self) -> Status:
        return self.summary.status

    @property
    def model(self) -> str | None:
        return self.summary.model

    @property
    def algorithm(self) -> str | None:
        s = self.summary.started
        return s.algorithm if s else None

    @property
    def k(self) -> int | None:
        s = self.summary.started
        return s.k if s else None

    @property
    def dim(self) -> int | None:
        s = self.summary.started
        return s.dim if s else None

    @property
    def n_embeddings(self) -> int | None:
        s = self.summary.started
        return s.n_embeddings if s else None

    @property
    def n_assignments(self) -> int:
        return self.summary.n_assignments

    @property
    def n_noise(self) -> int | None:
        """Assignments outside every cluster (label -1): those the cluster sizes leave out."""
        sizes = self.cluster_sizes
        return None if sizes is None else self.n_assignments - sum(sizes)

    @property
    def cluster_sizes(self) -> list[int] | None:
        c = self.summary.completed
        return list(c.cluster_sizes) if c is not None else None

    @property
    def assignment_digest(self) -> str | None:
        c = self.summary.completed
        return c.digest if c is not None else None

    @property
    def input_digest(self) -> str | None:
        s = self.summary.started
        return (s.input_digest or None) if s else None

    @property
    def parent_run_id(self) -> UUID | None:
        s = self.summary.started
        return s.parent_run_id if s else None

    @property
    def params(self) -> dict[str, Any]:
        s = self.summary.started
        return dict(s.params) if s else {}

    @property
    def started_at(self) -> datetime:
        return self.summary.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self.summary.finished_at

    @property
    def duration_s(self) -> float | None:
        return self.summary.duration_s

    @property
    def error(self) -> str | None:
        return self.summary.failed.error if self.summary.failed else None

    def to_json(self) -> dict[str, Any]:
        """The run in the store's JSON vocabulary (RFC 3339 UTC timestamps ending in Z)."""
        return {
            "run_id": str(self.run_id),
            "parent_run_id": None if self.parent_run_id is None else str(self.parent_run_id),
            "model": self.model,
            "algorithm": self.algorithm,
            "k": self.k,
            "n_embeddings": self.n_embeddings,
            "n_assignments": self.n_assignments,
            "n_noise": self.n_noise,
            "status": self.status,
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
            "duration_s": self.duration_s,
            "assignment_digest": self.assignment_digest,
            "input_digest": self.input_digest,
            "cluster_sizes": self.cluster_sizes,
        }

    def __repr__(self) -> str:
        return (
            f"Run({self.run_id}, {self.status}, model={self.model!r}, "
            f"algorithm={self.algorithm!r}, k={self.k}, n_assignments={self.n_assignments})"
        )

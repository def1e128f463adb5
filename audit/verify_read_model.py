"""The read-model judgement of ``audit.verify``: how the caller hands in the read models'
view of a run (``ReadModelCheck``; the audit never imports projections), and the findings
on a run's projected row and sizes, and on a run the read models skip (a dead letter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from clusterstore.eventstore import EventStore

from .verify_checker import _Checker


@dataclass(frozen=True)
class ReadModelCheck:
    """How the audit compares a run's log with a read model, handed in by the caller (the
    CLI passes the projections' functions; the audit never imports projections).

    ``digest(store, run_id)``: (count, sha256 hex) of the run's projected assignment
    payloads in seq order, the same digest as ``RunCompleted.digest``; None when the read
    model does not hold the run. ``first_difference(store, run_id)``: the first seq at
    which the log and the read model differ, or None.
    """

    digest: Callable[[EventStore, UUID], tuple[int, str] | None]
    first_difference: Callable[[EventStore, UUID], int | None] = lambda store, run_id: None
    # ``projected(store, run_id)``: what the read models hold for the run once they have
    # been brought past its last commit, else None (not projected yet: nothing to judge):
    # ``{"row": {id, model, k, status, n_assignments, n_noise} or None, "embeddingcluster":
    # bool (that read model is past the run too), "result_id": the run's result id there,
    # "sizes": {cluster: size} there (noise and empty clusters left out); both None when
    # embeddingcluster is not past the run or holds no row for it}``.
    projected: Callable[[EventStore, UUID], dict[str, Any] | None] | None = None
    # ``damaged(store, run_id)``: (seq, reason) when the read models skip the run from an
    # event that did not decode or that they cannot store (a dead letter), else None.
    damaged: Callable[[EventStore, UUID], tuple[int, str] | None] | None = None


_REPAIR = "`clusterstore projections rebuild` rebuilds the read models from the log"


def _report_damage(checker: _Checker, damage: tuple[int, str], *, repaired: bool) -> None:
    """The read models skip the run from a damaged event on (a dead letter)."""
    seq, reason = damage
    if repaired:
        message = (
            f"the read models skip the run from this event on ({reason}), but the log reads "
            f"whole now (repaired?); {_REPAIR}, the run included"
        )
    else:
        message = (
            f"the read models skip the run from this event on (it does not decode: {reason}); "
            "repair the event (restore its row from a backup), then `clusterstore "
            "projections rebuild` brings the run back"
        )
    checker.add("read_model_damaged", seq, message)


def _check_projected(
    checker: _Checker, projected: dict[str, Any], run_id: UUID, *, absent: bool
) -> None:
    """The run's ``clusteringresult`` row (and its presence in ``embeddingcluster``) against
    the run's state folded from the log."""
    life = checker.life
    started = life.started
    if started is None:  # a run without a readable RunStarted is reported already
        return
    row = projected["row"]
    if row is None:
        checker.add(
            "read_model_row",
            None,
            f"clusteringresult has no row for the run, though it was brought past the "
            f"run's last commit; {_REPAIR}",
        )
        return
    completed = life.completed
    expected = {
        "id": str(started.legacy_id or run_id),
        "model": started.model,
        "k": started.k,
        "status": life.status,
        "n_assignments": life.rows,
        "n_noise": completed.n_noise
        if completed is not None and life.status == "completed"
        else None,
    }
    got = {**row, "id": None if row["id"] is None else str(row["id"])}
    for column, want in expected.items():
        if got.get(column) != want:
            checker.add(
                "read_model_row",
                None,
                f"clusteringresult holds {column} = {got.get(column)!r}, the log says "
                f"{want!r}; {_REPAIR}",
            )
    if projected["result_id"] is not None and str(projected["result_id"]) != expected["id"]:
        checker.add(
            "read_model_row",
            None,
            f"embeddingcluster holds result_id {projected['result_id']}, the log says "
            f"{expected['id']}; {_REPAIR}",
        )
    sizes = projected["sizes"]
    if sizes is not None and life.status == "completed":
        log_sizes = {c: n for c, n in enumerate(checker.sizes_list()) if n}
        if sizes != log_sizes:
            wrong = sorted(
                c for c in sizes.keys() | log_sizes.keys() if sizes.get(c) != log_sizes.get(c)
            )
            shown = ", ".join(
                f"cluster {c}: {sizes.get(c, 0)} vs {log_sizes.get(c, 0)}" for c in wrong[:3]
            )
            checker.add(
                "read_model_sizes",
                None,
                f"embeddingcluster's cluster sizes differ from the log's ({shown}"
                f"{'; ...' if len(wrong) > 3 else ''}); {_REPAIR}",
            )
    if absent and life.status == "completed" and projected["embeddingcluster"]:
        checker.add(
            "read_model_missing",
            None,
            f"embeddingcluster does not show the completed run's {life.rows} assignments; "
            f"{_REPAIR}",
        )

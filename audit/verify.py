"""Checking that a run's log is whole and says what the run recorded.

One streaming pass over the run's events (pages, vectorised over assignments) checks:

- sequences are contiguous from 1, and every event lies in a commit of ``cs_commits``
  (rows inserted around the store have none; rows deleted at the end leave a commit that
  covers more than the log holds);
- every event decodes; assignments are in the canonical 29-byte layout, clusters are below
  k, distances finite; seq 1 is the only RunStarted; nothing follows RunCompleted, and no
  assignment follows a RunFailed that was not resumed;
- RunCompleted's count, digest (over the assignment payloads in seq order, of the version
  RunStarted declares: ``eventstore.digest``), cluster sizes and noise count (label -1: in
  the count and digest, in no cluster) match the log;
- the run's resume checkpoint (``eventstore.checkpoints``), if it has one, is the state the
  log gives at the rows it covers (``checkpoint_mismatch``);
- the read model agrees with the log, when the caller hands in a ``ReadModelCheck`` (the
  CLI passes the projections'; the audit never imports them).

Each finding names the run and the first bad seq. A changed assignment that still decodes
to a valid one (another cluster, another id) cannot be located from the log alone: the
only evidence is RunCompleted's digest and cluster sizes, so the finding names that event
and the range of assignments it covers.

This module runs one pass and judges it; the checks live in ``verify_checker`` (the log,
event by event and at its end), ``verify_checkpoint`` and ``verify_read_model``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from clusterstore.eventstore import EventStore

from ._log import PAGE_SIZE, BlockRanges, ProgressFn, run_commits
from .verify_checker import Finding, _Checker
from .verify_checkpoint import _check_checkpoint
from .verify_read_model import ReadModelCheck, _check_projected, _report_damage

__all__ = [
    "Finding",
    "ReadModelCheck",
    "ReadModelState",
    "VerifyReport",
    "verify_run",
    "verify_runs",
]

ReadModelState = Literal["ok", "mismatch", "absent", "unavailable"]


@dataclass
class VerifyReport:
    run_id: UUID
    events: int  # rows read
    head: int  # last seq read
    n_assignments: int
    digest: str  # recomputed from the log
    recorded_digest: str | None  # from RunCompleted
    cluster_sizes: list[int]  # recomputed from the log
    read_model: ReadModelState
    findings: list[Finding] = field(default_factory=list)
    n_noise: int = 0  # assignments labelled -1 (noise), recomputed from the log

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "ok": self.ok,
            "n_events": self.events,
            "head_seq": self.head,
            "n_assignments": self.n_assignments,
            "n_noise": self.n_noise,
            "assignment_digest": self.recorded_digest,
            "computed_assignment_digest": self.digest,
            "read_model": self.read_model,
            "findings": [f.to_json() for f in self.findings],
        }


def verify_run(
    store: EventStore,
    run_id: UUID,
    *,
    read_model: ReadModelCheck | None = None,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check one run (see the module docstring); never raises for bad stored bytes.
    Without ``read_model`` the read model is not checked (``read_model="unavailable"``)."""
    last_seen = store.run_last_position(run_id)  # before the log is read
    # before the log too: a checkpoint only ever covers rows already committed
    checkpoint = store.read_checkpoint(run_id)
    checker = _Checker(run_id, run_commits(store, run_id))
    if checkpoint is not None:
        checker.life.watch(checkpoint.rows)
    _read_log(store, checker, page_size, on_progress)
    checker.finish(run_commits(store, run_id))
    if run_id in store.unregistered_runs():
        checker.add(
            "run_unregistered",
            None,
            "the run has no cs_runs row (deleted around the store); its events are in the "
            "log, and `clusterstore init` restores the row",
        )
    # the read models are judged against a sound log only: when the log itself was
    # changed, a rebuild from it is not the repair, and its findings already say so
    log_sound = not checker.findings()
    digest = checker.digest_hex()
    n_assign = checker.life.rows
    state: ReadModelState = "unavailable"
    projected = None
    if log_sound and read_model is not None and read_model.projected is not None:
        # Read before the digest: the read models only move forward, so what this saw
        # covered is still covered when the digest is read. A run that gained commits
        # while it was read cannot be judged against this pass (a writer or a resume is
        # still at work): its read models are not judged this time.
        projected = read_model.projected(store, run_id)
        if store.run_last_position(run_id) != last_seen:
            projected = None
    if read_model is not None:
        model = read_model.digest(store, run_id)
        state = "absent" if model is None else "ok"
        if model is not None and (int(model[0]), str(model[1])) != (n_assign, digest):
            state = "mismatch"
            changed = read_model.first_difference(store, run_id)
            if changed is not None:
                checker.add(
                    "changed_assignment",
                    changed,
                    "the stored assignment differs from the one projected into the read model "
                    "(changed, removed or added around the store)",
                )
            checker.add(
                "read_model_mismatch",
                None,
                f"the read model holds {model[0]} assignments with digest {model[1][:16]}, "
                f"the log {n_assign} with digest {digest[:16]}",
            )
    damage = read_model.damaged(store, run_id) if read_model and read_model.damaged else None
    if damage is not None:
        _report_damage(checker, damage, repaired=log_sound)
    elif projected is not None:
        _check_projected(checker, projected, run_id, absent=state == "absent")
    if checkpoint is not None:
        _check_checkpoint(checker, checkpoint)
    completed = checker.life.completed
    return VerifyReport(
        run_id=run_id,
        events=checker.events,
        head=checker.last_seq,
        n_assignments=n_assign,
        digest=digest,
        recorded_digest=completed.digest if completed is not None else None,
        cluster_sizes=checker.sizes_list(),
        read_model=state,
        findings=checker.findings(),
        n_noise=checker.life.n_noise,
    )


def _read_log(
    store: EventStore, checker: _Checker, page_size: int, on_progress: ProgressFn | None
) -> None:
    """Feed the checker the whole log of its run in seq order: set-based blocks of
    ``BLOCK_PAGES`` pages of seqs where a block is regular (every seq present, canonical fixed-width
    assignments), and event by event, as read, wherever it is not (so every finding is made
    by the same per-event checks)."""
    run_id = checker.run_id
    ranges = BlockRanges(store, run_id, page_size=page_size)
    for after, until in ranges:
        block = store.read_stream_block(run_id, after=after, until=until)
        if checker.feed_block(block):
            ranges.read_to(block.seq_range[1] if block.seq_range else None)
            if on_progress is not None:
                on_progress(block.n_rows)
        else:
            for page in store.read_stream_pages(
                run_id, after=after, until=until, page_size=page_size
            ):
                checker.feed(page)
                ranges.read_to(page[-1].seq)
                if on_progress is not None:
                    on_progress(len(page))


def verify_runs(
    store: EventStore,
    run_ids: Iterable[UUID],
    *,
    read_model: ReadModelCheck | None = None,
    on_progress: ProgressFn | None = None,
) -> list[VerifyReport]:
    return [verify_run(store, r, read_model=read_model, on_progress=on_progress) for r in run_ids]

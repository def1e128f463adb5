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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore, RunCompleted, RunStarted, StoredEvent
from clusterstore.eventstore.checkpoints import Checkpoint
from clusterstore.eventstore.codec import (
    ASSIGNMENT_DTYPE,
    LEGACY_ASSIGNMENT_DTYPE,
    labels_of,
    layout_mask,
)
from clusterstore.eventstore.digest import DIGEST_V1, DIGEST_V2, AssignmentDigest
from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.events import BY_CODE
from clusterstore.eventstore.lifecycle import RunLifecycle, joined
from clusterstore.eventstore.log_reads import StreamBlock
from clusterstore.eventstore.store import decode_stored

from ._log import (
    ASSIGNMENT,
    PAGE_SIZE,
    CommitRange,
    ProgressFn,
    block_ranges,
    canonical_mask,
    run_commits,
)

ReadModelState = Literal["ok", "mismatch", "absent", "unavailable"]
# Cluster sizes are counted densely for cluster numbers below min(k, this): a RunStarted
# that declares an absurd k (2^31; nothing stops a writer from declaring it) must not make
# verify allocate k counters. Sizes of clusters above the bound are not checked.
_UNBOUNDED_CLUSTERS = 1 << 20


@dataclass(frozen=True)
class Finding:
    run_id: UUID
    seq: int | None  # the first bad seq, when the finding has one
    kind: str
    message: str

    def line(self) -> str:
        where = f"{self.run_id} seq {self.seq}" if self.seq is not None else str(self.run_id)
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "seq": self.seq,
            "kind": self.kind,
            "message": self.message,
        }


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
    # event that did not decode (a dead letter), else None.
    damaged: Callable[[EventStore, UUID], tuple[int, str] | None] | None = None


_REPAIR = "`clusterstore projections rebuild` rebuilds the read models from the log"


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


def _report_damage(checker: _Checker, damage: tuple[int, str], *, repaired: bool) -> None:
    """The read models skip the run from a damaged event on (a dead letter)."""
    seq, reason = damage
    if repaired:
        message = (
            f"the read models skip the run from this event on (it did not decode: {reason}), "
            f"but the log reads whole now (repaired?); {_REPAIR}, the run included"
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


def _check_checkpoint(checker: _Checker, stored: Checkpoint) -> None:
    """The run's resume checkpoint against the state the log gives at its rows."""
    life = checker.life
    started = life.started
    if started is None:  # a run without a readable RunStarted is reported already
        return
    problem = None
    got = life.state_at(stored.rows)
    if started.digest_version != DIGEST_V2:
        problem = f"a run of digest version {started.digest_version} has no checkpoints"
    elif (problem := stored.problem(k=started.k, n_embeddings=started.n_embeddings)) is not None:
        pass
    elif got is None:
        problem = f"it covers {stored.rows} assignments, the log holds {life.rows}"
    elif got.seq != stored.seq:
        problem = f"its {stored.rows} assignments end at seq {stored.seq}, in the log at {got.seq}"
    elif got.chain != stored.chain:
        problem = f"its digest chain after {stored.rows} assignments differs from the log's"
    elif got.sizes is not None and got.n_noise is not None and stored.sizes is not None:
        n = max(len(got.sizes), len(stored.sizes))
        if not np.array_equal(
            np.pad(got.sizes, (0, n - len(got.sizes))),
            np.pad(stored.sizes, (0, n - len(stored.sizes))),
        ):
            problem = f"its cluster sizes after {stored.rows} assignments differ from the log's"
        elif got.n_noise != stored.n_noise:
            problem = (
                f"it counts {stored.n_noise} noise assignments in the first {stored.rows}, "
                f"the log {got.n_noise}"
            )
    if problem is not None:
        checker.add(
            "checkpoint_mismatch",
            None,
            f"the run's resume checkpoint (cs_checkpoints) disagrees with the log: {problem}; "
            "it was changed around the store (a run resumed from it may have recorded a "
            "wrong digest); delete that row and resume folds the whole log",
        )


def _read_log(
    store: EventStore, checker: _Checker, page_size: int, on_progress: ProgressFn | None
) -> None:
    """Feed the checker the whole log of its run in seq order: set-based blocks of
    ``BLOCK_PAGES`` pages of seqs where a block is regular (every seq present, canonical fixed-width
    assignments), and event by event, as read, wherever it is not (so every finding is made
    by the same per-event checks)."""
    run_id = checker.run_id
    for after, until in block_ranges(store, run_id, page_size=page_size):
        block = store.read_stream_block(run_id, after=after, until=until)
        if checker.feed_block(block):
            if on_progress is not None:
                on_progress(block.n_rows)
        else:
            for page in store.read_stream_pages(
                run_id, after=after, until=until, page_size=page_size
            ):
                checker.feed(page)
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


class _Checker:
    """The streaming state of one run's check."""

    def __init__(self, run_id: UUID, commits: Sequence[CommitRange]):
        self.run_id = run_id
        self._set_commits(commits)
        self.expected = 1
        self.last_seq = 0
        self.events = 0
        # the run's state, folded like every reader folds it; the checker decides what to
        # apply (only what it can trust: the first RunStarted and RunCompleted, decodable
        # events, and cluster sizes of in-range labels)
        self.life = RunLifecycle()
        self.first_assign: int | None = None
        self.last_assign: int | None = None
        self.seq1_type: int | None = None
        self.completed_seq: int | None = None
        self.beyond: tuple[int, int] | None = None  # (first seq, count) past the commits
        self._found: dict[str, tuple[Finding, int]] = {}
        # assignments before any RunStarted was read (seq 1 unreadable): its digest version
        # is unknown, so version 2's is kept too and RunCompleted may match either
        self._other_digest: AssignmentDigest | None = None
        self._nc_undecodable = False  # the named not_canonical finding does not decode

    def _set_commits(self, commits: Sequence[CommitRange]) -> None:
        self.starts = np.array([c.first_seq for c in commits], dtype=np.int64)
        self.ends = np.array([c.last_seq for c in commits], dtype=np.int64)
        self.commit_head = int(self.ends.max()) if len(commits) else 0

    # ---------------------------------------------------------------- findings

    def add(self, kind: str, seq: int | None, message: str, count: int = 1) -> None:
        """Record a finding; later ones of the same kind are only counted."""
        if kind in self._found:
            first, more = self._found[kind]
            self._found[kind] = (first, more + count)
        else:
            self._found[kind] = (Finding(self.run_id, seq, kind, message), count - 1)

    def findings(self) -> list[Finding]:
        """Findings located in the log first, by seq; then RunCompleted's claims that do not
        hold; then the read model."""
        out = []
        for first, more in self._found.values():
            if more:
                first = Finding(
                    first.run_id, first.seq, first.kind, f"{first.message} (and {more} more)"
                )
            out.append(first)
        return sorted(out, key=_finding_order)

    # ---------------------------------------------------------------- the pass

    def feed(self, page: Sequence[StoredEvent]) -> None:
        seqs = np.fromiter((ev.seq for ev in page), dtype=np.int64, count=len(page))
        self._check_seqs(seqs)
        self._check_committed(seqs)
        self.events += len(page)
        self.last_seq = max(self.last_seq, int(seqs[-1]))
        types = np.fromiter((ev.type for ev in page), dtype=np.int64, count=len(page))
        lo = 0
        for i in [*np.flatnonzero(types != ASSIGNMENT).tolist(), len(page)]:
            if i > lo:
                self._assignments(page[lo:i])
            if i < len(page):
                self._other(page[i])
            lo = i + 1

    def _check_seqs(self, seqs: npt.NDArray[np.int64]) -> None:
        n = len(seqs)
        if int(seqs[0]) == self.expected and int(seqs[-1]) == self.expected + n - 1:
            self.expected += n  # rows come ordered and unique by seq: contiguous
            return
        for s in seqs.tolist():
            if s < self.expected:
                self.add("before_start", s, f"an event at seq {s}; sequences start at 1")
            elif s > self.expected:
                self.add("missing", self.expected, _missing(self.expected, s - 1))
                self.expected = s + 1
            else:
                self.expected += 1

    def _check_committed(self, seqs: npt.NDArray[np.int64]) -> None:
        seqs = seqs[seqs >= 1]  # earlier ones are reported by _check_seqs
        if not len(seqs):
            return
        i = np.searchsorted(self.starts, seqs, side="right") - 1
        if len(self.ends):
            covered = (i >= 0) & (seqs <= self.ends[np.maximum(i, 0)])
        else:
            covered = np.zeros(len(seqs), dtype=bool)
        bad = seqs[~covered]
        inside = bad[bad <= self.commit_head]
        if len(inside):
            self.add("uncommitted", int(inside[0]), _UNCOMMITTED, len(inside))
        past = bad[bad > self.commit_head]
        if len(past):  # perhaps appended since the commits were read: decided in finish()
            first, count = self.beyond or (int(past[0]), 0)
            self.beyond = (first, count + len(past))

    def feed_block(self, block: StreamBlock) -> bool:
        """Take a block read set-based, if it is regular: every seq from its first to its
        last present, no assignment but canonical ones of the run's width. False (nothing
        taken) otherwise: the caller feeds the same events one by one instead."""
        span = block.seq_range
        if span is None or block.n_rows != span[1] - span[0] + 1:
            return False
        if any(ev.type == ASSIGNMENT for ev in block.others):
            return False
        legacy = self._imported_after(block.others)
        dtype = LEGACY_ASSIGNMENT_DTYPE if legacy else ASSIGNMENT_DTYPE
        width = dtype.itemsize
        if block.n_fixed:
            if block.widths != (width, width) or len(block.assignments) != block.n_fixed * width:
                return False
            rec = np.frombuffer(block.assignments, dtype=dtype)
            if not layout_mask(rec, legacy=legacy).all():
                return False
        seqs = np.arange(span[0], span[1] + 1, dtype=np.int64)
        self._check_seqs(seqs)
        self._check_committed(seqs)
        self.events += block.n_rows
        self.last_seq = max(self.last_seq, span[1])
        lo, done = span[0], 0  # the next seq, the assignments taken
        for ev in [*block.others, None]:
            stop = span[1] + 1 if ev is None else ev.seq
            if stop > lo:
                count = stop - lo
                data = block.assignments[done * width : (done + count) * width]
                self._canonical_assignments(lo, stop - 1, data, count, dtype)
                done += count
            if ev is not None:
                self._other(ev)
            lo = stop + 1
        return True

    def _imported_after(self, others: Sequence[StoredEvent]) -> bool:
        """Whether the run counts as imported once ``others`` (seq order) are applied: only
        a first RunStarted at seq 1 can change it (``_other``)."""
        if self.life.started is not None or not others or others[0].seq != 1:
            return self.imported
        try:
            event = decode_stored(others[0])
        except EventDecodeError:
            return False
        return isinstance(event, RunStarted) and event.legacy_id is not None

    def _canonical_assignments(
        self, first: int, last: int, data: bytes, count: int, dtype: np.dtype[Any]
    ) -> None:
        """Assignments first..last, all present and canonical, their payloads ``data``."""
        if self.completed_seq is not None:
            self.add("after_end", first, f"an event after RunCompleted (seq {self.completed_seq})")
        elif self.life.failed is not None:
            self.add("after_failure", first, "an assignment after RunFailed without RunResumed")
        self.first_assign = first if self.first_assign is None else self.first_assign
        self.last_assign = last
        seqs = np.arange(first, last + 1, dtype=np.int64)
        clusters = self._values(np.frombuffer(data, dtype=dtype), seqs)
        self._account(first, last, data, count, clusters)

    def _account(
        self,
        first: int,
        last: int,
        data: bytes | Sequence[bytes],
        count: int,
        clusters: npt.NDArray[np.int64],
    ) -> None:
        if self.life.started is None and self.life.rows == 0:
            self._other_digest = AssignmentDigest(DIGEST_V2)
        if self._other_digest is not None:
            self._other_digest.update(data, count)
        self.life.account(first, last, data, count, clusters)

    def digest_hex(self, claimed: str | None = None) -> str:
        """The digest the log gives (with seq 1 unreadable: the version that gives
        ``claimed``, RunCompleted's, if one does)."""
        digest = self.life.digest.hexdigest()
        if self._other_digest is not None and self.life.digest.version == DIGEST_V1:
            other = self._other_digest.hexdigest()
            claimed = claimed or (self.life.completed.digest if self.life.completed else None)
            if claimed == other:
                return other
        return digest

    def _assignments(self, evs: Sequence[StoredEvent]) -> None:
        first = evs[0].seq
        if self.completed_seq is not None:
            self.add("after_end", first, f"an event after RunCompleted (seq {self.completed_seq})")
        elif self.life.failed is not None:
            self.add("after_failure", first, "an assignment after RunFailed without RunResumed")
        payloads = [ev.payload for ev in evs]
        data = b"".join(payloads)
        self.first_assign = first if self.first_assign is None else self.first_assign
        self.last_assign = evs[-1].seq
        legacy = self.imported
        dtype = LEGACY_ASSIGNMENT_DTYPE if legacy else ASSIGNMENT_DTYPE
        ok = canonical_mask(payloads, [ev.version for ev in evs], data, legacy=legacy)
        if ok.all():
            seqs = np.fromiter((ev.seq for ev in evs), dtype=np.int64, count=len(evs))
            clusters = self._values(np.frombuffer(data, dtype=dtype), seqs)
            self._account(first, evs[-1].seq, data, len(evs), clusters)
            return
        self._non_canonical([evs[i] for i in np.flatnonzero(~ok).tolist()], dtype.itemsize)
        keep = np.flatnonzero(ok).tolist()
        good = b"".join(payloads[i] for i in keep)
        seqs = np.array([evs[i].seq for i in keep], dtype=np.int64)
        clusters = self._values(np.frombuffer(good, dtype=dtype), seqs)
        # every payload is hashed and counted; only the decodable ones are sized
        self._account(first, evs[-1].seq, joined(payloads), len(evs), clusters)

    def _non_canonical(self, bad: Sequence[StoredEvent], width: int) -> None:
        """Assignments off the canonical layout, one finding for the run: it names the first
        that does not decode at all when there is one (the worst), else the first of them;
        the others are counted."""
        undecodable = None
        for ev in bad:
            try:
                decode_stored(ev)
            except EventDecodeError:
                undecodable = ev
                break
        named = undecodable or bad[0]
        message = (
            f"AssignmentRecorded payload is not in the canonical {width}-byte layout "
            f"({len(named.payload)} bytes, version {named.version}: {named.payload[:32].hex()})"
        )
        earlier = self._found.get("not_canonical")
        if earlier is not None and undecodable is not None and not self._nc_undecodable:
            # an earlier block named one that decodes: name this worse one instead
            self._found["not_canonical"] = (
                Finding(self.run_id, named.seq, "not_canonical", message),
                earlier[1] + len(bad),
            )
        else:
            self.add("not_canonical", named.seq, message, len(bad))
        self._nc_undecodable = self._nc_undecodable or undecodable is not None

    @property
    def imported(self) -> bool:
        """A run imported from a legacy database: 47-byte assignments that keep the legacy
        row id, and no distances (NaN), since the legacy schema has none."""
        started = self.life.started
        return started is not None and started.legacy_id is not None

    @property
    def has_distances(self) -> bool:
        """False for labels recorded without distances (NaN, like an imported run's)."""
        started = self.life.started
        return started is None or started.has_distances

    def _values(
        self, rec: npt.NDArray[np.void], seqs: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Check decoded assignments; returns the clusters to count in the sizes."""
        clusters = labels_of(rec)  # -1 for noise
        started = self.life.started
        bound = started.k if started is not None else _UNBOUNDED_CLUSTERS
        over = clusters >= bound
        if over.any() and started is not None:
            j = int(np.flatnonzero(over)[0])
            self.add(
                "cluster_out_of_range",
                int(seqs[j]),
                f"cluster {clusters[j]} is not below k={bound}",
                int(over.sum()),
            )
        finite = np.isfinite(rec["distance"])
        if not finite.all() and not self.imported and self.has_distances:
            j = int(np.flatnonzero(~finite)[0])
            self.add(
                "bad_distance",
                int(seqs[j]),
                f"distance {float(rec['distance'][j])} is not finite",
                int((~finite).sum()),
            )
        return clusters[~over & (clusters < _UNBOUNDED_CLUSTERS)]

    def _other(self, ev: StoredEvent) -> None:
        if ev.seq == 1:
            self.seq1_type = ev.type
        if self.completed_seq is not None:
            name = BY_CODE[ev.type].NAME if ev.type in BY_CODE else f"type {ev.type}"
            self.add("after_end", ev.seq, f"a {name} after RunCompleted (seq {self.completed_seq})")
        try:
            event = decode_stored(ev)
        except EventDecodeError as e:
            self.add("undecodable", ev.seq, e.reason)
            return
        match event:
            case RunStarted() if ev.seq != 1 or self.life.started is not None:
                self.add("extra_start", ev.seq, "a RunStarted after the first event")
                return
            case RunCompleted() if self.completed_seq is not None:
                return  # the first RunCompleted is the run's claim; later ones are after_end
            case RunCompleted():
                self.completed_seq = ev.seq
        self.life.apply(event, ev.seq)

    # ---------------------------------------------------------------- the end

    def finish(self, commits_now: Sequence[CommitRange]) -> None:
        if self.events == 0:
            self.add("empty", None, "the run has no events")
        elif (
            self.seq1_type is not None and self.life.started is None and not self._undecodable_at(1)
        ):
            self.add("no_start", 1, "seq 1 is not a RunStarted event")
        if self.commit_head > self.last_seq:
            first = max(self.last_seq + 1, 1)
            self.add(
                "missing",
                first,
                f"{_missing(first, self.commit_head)} (committed, then deleted)",
            )
        if self.beyond is not None:
            self._set_commits(commits_now)
            first, count = self.beyond
            if first > self.commit_head:
                self.add("uncommitted", first, _UNCOMMITTED, count)
        completed = self.life.completed
        if self.completed_seq is not None and completed is not None:
            self._check_completed(self.completed_seq, completed)

    def _undecodable_at(self, seq: int) -> bool:
        found = self._found.get("undecodable")
        return found is not None and found[0].seq == seq

    def _check_completed(self, seq: int, rc: RunCompleted) -> None:
        n_assign = self.life.rows
        if rc.count != n_assign:
            self.add(
                "count_mismatch",
                seq,
                f"RunCompleted counts {rc.count} assignments, the log holds {n_assign}",
            )
        digest = self.digest_hex(rc.digest)
        if rc.digest != digest:
            span = (
                _span(self.first_assign, self.last_assign)
                if self.first_assign is not None and self.last_assign is not None
                else "no assignments"
            )
            self.add(
                "digest_mismatch",
                seq,
                f"the assignments ({span}) hash to {digest[:16]}, "
                f"RunCompleted recorded {rc.digest[:16]}",
            )
        recorded = np.asarray(rc.cluster_sizes[:_UNBOUNDED_CLUSTERS], dtype=np.int64)
        sizes = self.life.sizes
        n = max(len(recorded), len(sizes))
        recorded = np.pad(recorded, (0, n - len(recorded)))
        logged = np.pad(sizes, (0, n - len(sizes)))
        diff = np.flatnonzero(recorded != logged)
        if len(diff):
            shown = "; ".join(
                f"cluster {c}: {recorded[c]} recorded, {logged[c]} in the log"
                for c in diff[:3].tolist()
            )
            more = f"; and {len(diff) - 3} more clusters" if len(diff) > 3 else ""
            self.add("sizes_mismatch", seq, f"RunCompleted's cluster sizes differ ({shown}{more})")
        if rc.n_noise != self.life.n_noise:
            self.add(
                "noise_mismatch",
                seq,
                f"RunCompleted counts {rc.n_noise} noise assignments (label -1), "
                f"the log holds {self.life.n_noise}",
            )

    def sizes_list(self) -> list[int]:
        sizes = self.life.sizes
        started = self.life.started
        k = started.k if started is not None else len(sizes)
        k = min(k, max(len(sizes), _UNBOUNDED_CLUSTERS))
        sizes = np.pad(sizes, (0, max(0, k - len(sizes))))
        return [int(x) for x in sizes]


_CLAIMS = (
    "checkpoint_mismatch",
    "count_mismatch",
    "digest_mismatch",
    "sizes_mismatch",
    "noise_mismatch",
    "read_model_mismatch",
    "read_model_row",
    "read_model_sizes",
    "read_model_missing",
)


def _finding_order(f: Finding) -> tuple[int, int]:
    if f.kind in _CLAIMS:
        return (1, _CLAIMS.index(f.kind))
    return (0, f.seq if f.seq is not None else 0)


_UNCOMMITTED = "an event that no commit covers (written around the store)"


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seqs {first}-{last}"


def _missing(first: int, last: int) -> str:
    return f"{_span(first, last)} {'is' if first == last else 'are'} missing"

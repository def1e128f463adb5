"""The streaming state of one run's check (``audit.verify``): the findings it makes while
it is fed the run's log in seq order, page by page or block by block, and at the end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import RunCompleted, RunStarted, StoredEvent
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

from ._log import ASSIGNMENT, CommitRange, canonical_mask

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

"""Read-only access to the log that the audit needs, through ``EventStore``'s bulk reads
(``eventstore.log_reads``: point reads by primary key (run_id, seq), a count over one run's
key range, and the run's commits), and the vectorised checks of assignment payloads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore, StoredEvent
from clusterstore.eventstore.codec import (
    ASSIGNMENT_DTYPE,
    LEGACY_ASSIGNMENT_DTYPE,
    labels_of,
    layout_mask,
)
from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.events import AssignmentRecorded
from clusterstore.eventstore.log_reads import StreamBlock
from clusterstore.eventstore.runs import ProgressFn

ASSIGNMENT = AssignmentRecorded.TYPE
PAGE_SIZE = 20_000
# Sequences start at 1; reading from here also shows rows written around the store at 0 or
# below (a tampered log), which ``after=0`` would hide.
BEFORE_ALL = -(2**62)
BLOCK_PAGES = 5  # a set-based block read spans this many pages of seqs


class CommitRange(NamedTuple):
    first_seq: int
    events: int

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.events - 1


def events_at(
    store: EventStore, keys: Sequence[tuple[UUID, int]]
) -> dict[tuple[UUID, int], StoredEvent]:
    """The stored events at the given (run_id, seq) keys (missing keys are left out)."""
    return store.read_events_at(keys)


def count_assignments(store: EventStore, run_id: UUID) -> int:
    """AssignmentRecorded rows of a run: a count over the run's primary-key range."""
    return store.count_events(run_id, type=ASSIGNMENT)


def committed_heads(store: EventStore) -> dict[UUID, int]:
    """Each run's last committed seq, from ``cs_commits`` (rows inserted into the log
    around the store are not covered by any commit)."""
    return store.read_committed_heads()


def run_commits(store: EventStore, run_id: UUID) -> list[CommitRange]:
    """The run's append transactions as (first_seq, count), in seq order."""
    return [CommitRange(first, n) for first, n in store.read_run_commits(run_id)]


def pages(
    store: EventStore,
    run_id: UUID,
    *,
    after: int = BEFORE_ALL,
    limit: int | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[list[StoredEvent]]:
    """The run's stored events in seq order, one short read transaction per page."""
    return store.read_stream_pages(run_id, after=after, limit=limit, page_size=page_size)


def canonical_mask(
    payloads: Sequence[bytes],
    versions: Sequence[int],
    data: bytes | None = None,
    *,
    legacy: bool = False,
) -> npt.NDArray[np.bool_]:
    """Which assignment payloads are in the canonical layout (vectorised): 29 bytes, or for
    a run imported from a legacy database the 47-byte layout that keeps the legacy row id.
    ``data``, if given, is ``b"".join(payloads)``, already made by the caller."""
    dtype = LEGACY_ASSIGNMENT_DTYPE if legacy else ASSIGNMENT_DTYPE
    n = len(payloads)
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=n)
    ok = (lengths == dtype.itemsize) & (
        np.asarray(versions, dtype=np.int64) == AssignmentRecorded.VERSION
    )
    if not ok.any():
        return ok
    idx = np.flatnonzero(ok)
    if data is None or len(idx) != n:
        data = b"".join(payloads[i] for i in idx.tolist())
    ok[idx] = layout_mask(np.frombuffer(data, dtype=dtype), legacy=legacy)
    return ok


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])  # dashes elsewhere


def uuid_texts(ids: npt.NDArray[np.void]) -> list[str]:
    """16-byte ids in the canonical text form of UUIDs (spelt out with numpy)."""
    raw = np.frombuffer(np.ascontiguousarray(ids).tobytes(), dtype=np.uint8).reshape(-1, 16)
    digits = np.empty((len(raw), 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    out = np.full((len(raw), 36), ord("-"), dtype=np.uint8)
    out[:, _DIGITS] = digits
    text = out.tobytes().decode("ascii")
    return [text[i : i + 36] for i in range(0, len(text), 36)]


def block_labels(records: npt.NDArray[np.void]) -> npt.NDArray[np.int64]:
    """The cluster labels of assignment records as int64, -1 for noise (the one place the
    audit reads them)."""
    return labels_of(records)


class AssignmentBlock(NamedTuple):
    """Consecutive assignments of a run, decoded as a structured array (``ASSIGNMENT_DTYPE``,
    or ``LEGACY_ASSIGNMENT_DTYPE`` for an imported run: fields ``embedding_id`` V16,
    ``cluster`` >u4, ``distance`` >f4 either way) with their seqs. ``codec.labels_of``
    reads the labels (-1 for noise, whose ``cluster`` field holds 0xffffffff)."""

    seqs: npt.NDArray[np.int64]
    records: npt.NDArray[np.void]


def assignment_blocks(
    store: EventStore,
    run_id: UUID,
    *,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> Iterator[AssignmentBlock]:
    """A run's assignments in seq order, in blocks. A record that is not in the canonical
    layout raises ``EventDecodeError`` naming the run and its seq. Read set-based, in blocks
    of ``BLOCK_PAGES`` pages of seqs (the database concatenates the payloads); a block that
    is not regular (a seq missing, an assignment off the fixed widths) is read page by page."""
    ranges = BlockRanges(store, run_id, page_size=page_size)
    for after, until in ranges:
        read = store.read_stream_block(run_id, after=after, until=until)
        block = _regular_block(read)
        if block is not None:
            ranges.read_to(read.seq_range[1] if read.seq_range else None)
            if len(block.seqs):
                yield block
            if on_progress is not None:
                on_progress(read.n_rows)
        else:
            last: list[int] = []
            yield from _page_blocks(store, run_id, after, until, page_size, on_progress, last)
            ranges.read_to(last[0] if last else None)


class BlockRanges:
    """The seq ranges ``(after, until]`` a run's log is read in, set-based: ``BLOCK_PAGES``
    pages of seqs each, every one starting at the next stored seq (a gap is skipped).

    The reader says with ``read_to(seq)`` which seq its block's read ended at: a run that
    is still written (a writer, a resume) may have had only part of the range committed
    when it was read, and the next range then starts after what was read, not after the
    range (which would skip what was committed since: found by the load harness as a
    completed run whose assignments verify counted short)."""

    def __init__(self, store: EventStore, run_id: UUID, *, page_size: int = PAGE_SIZE):
        self.store = store
        self.run_id = run_id
        self.span = page_size * BLOCK_PAGES
        self.after = BEFORE_ALL
        self._until = BEFORE_ALL

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while (first := self.store.next_seq(self.run_id, after=self.after)) is not None:
            after = first - 1
            self._until = self.after = after + self.span
            yield after, self._until

    def read_to(self, seq: int | None) -> None:
        """The range just yielded was read up to ``seq`` (None: nothing read): the next one
        starts after it (the last call for a range counts)."""
        if seq is not None:
            self.after = min(self._until, seq)


def _regular_block(block: StreamBlock) -> AssignmentBlock | None:
    """The block's assignments if every seq in it is present and every assignment is a
    fixed-width canonical one of one layout; else None."""
    span = block.seq_range
    if span is None or block.n_rows != span[1] - span[0] + 1:
        return None
    if any(ev.type == ASSIGNMENT for ev in block.others):
        return None
    if not block.n_fixed:
        return AssignmentBlock(np.empty(0, np.int64), np.empty(0, ASSIGNMENT_DTYPE))
    width = block.widths[0] if block.widths and block.widths[0] == block.widths[1] else 0
    legacy = width == LEGACY_ASSIGNMENT_DTYPE.itemsize
    dtype = LEGACY_ASSIGNMENT_DTYPE if legacy else ASSIGNMENT_DTYPE
    if width != dtype.itemsize or len(block.assignments) != block.n_fixed * width:
        return None
    rec = np.frombuffer(block.assignments, dtype=dtype)
    if not layout_mask(rec, legacy=legacy).all():
        return None
    seqs = np.arange(span[0], span[1] + 1, dtype=np.int64)
    if block.others:
        seqs = np.setdiff1d(seqs, [ev.seq for ev in block.others], assume_unique=True)
    return AssignmentBlock(seqs, rec)


def _page_blocks(
    store: EventStore,
    run_id: UUID,
    after: int,
    until: int,
    page_size: int,
    on_progress: ProgressFn | None,
    last: list[int],
) -> Iterator[AssignmentBlock]:
    """The assignments with ``after < seq <= until``, one block per page of events;
    ``last`` is left holding the last seq read."""
    for page in store.read_stream_pages(run_id, after=after, until=until, page_size=page_size):
        last[:] = [page[-1].seq]
        assign = [ev for ev in page if ev.type == ASSIGNMENT]
        if assign:
            payloads = [ev.payload for ev in assign]
            data = b"".join(payloads)
            versions = [ev.version for ev in assign]
            dtype = ASSIGNMENT_DTYPE
            ok = canonical_mask(payloads, versions, data)
            if not ok.all() and canonical_mask(payloads, versions, data, legacy=True).all():
                dtype, ok = LEGACY_ASSIGNMENT_DTYPE, np.ones(len(assign), dtype=bool)
            if not ok.all():
                bad = assign[int(np.flatnonzero(~ok)[0])]
                raise EventDecodeError(
                    run_id,
                    bad.seq,
                    "AssignmentRecorded payload is not in the canonical 29-byte layout "
                    f"(version {bad.version}, {len(bad.payload)} bytes); "
                    "`clusterstore runs verify` checks the whole run",
                )
            seqs = np.fromiter((ev.seq for ev in assign), dtype=np.int64, count=len(assign))
            yield AssignmentBlock(seqs, np.frombuffer(data, dtype=dtype))
        if on_progress is not None:
            on_progress(len(page))

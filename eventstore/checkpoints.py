"""Checkpoints: where a run's fold stood at a segment boundary, so that resume is cheap.

A run whose digest is version 2 (``digest``) can be folded from a segment boundary: the
digest's state there is a chain value of 32 bytes. After each committed batch the run's
writer stores, in ``cs_checkpoints`` (one row per run, only ever moved forward), the state
at the last segment boundary its rows reached: rows covered, the seq of the last of them,
the chain value, the cluster sizes and the noise count. The log is append-only, so a
checkpoint that was right stays right; it may lag the log by up to a batch and a segment.

It is an optimisation, never the final word: ``runs.read_progress`` checks that it is
plausible (else folds the whole log), and ``runs verify`` recomputes everything from the
log and reports a checkpoint that disagrees with it (``checkpoint_mismatch``); a tampered
checkpoint can make a resumed run record a wrong digest, never one that verify accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import numpy as np
import numpy.typing as npt
from sqlalchemy import inspect, select

from .digest import SEGMENT_ROWS, Boundary
from .errors import DatabaseBusyError
from .recorder import Recorder, retrying
from .schema import checkpoints

# A checkpoint's cluster sizes are k x 8 bytes. It is written only when they are at most
# this many bytes per assignment it moves forward (a 29-byte payload each), so that
# checkpoints of a run with a huge k stay a small share of what the run writes (they are
# then written every k x 8 / 4 assignments, and a resume folds at most that many more).
CHECKPOINT_BYTES_PER_ROW = 4


@dataclass(frozen=True)
class Checkpoint:
    """A run's fold after its first ``rows`` assignments (a multiple of ``SEGMENT_ROWS``),
    the last of them at ``seq``. ``sizes``/``n_noise`` are None when they could not be
    counted (a damaged log: labels that are no cluster); such a state is never stored."""

    rows: int
    seq: int
    chain: bytes
    sizes: npt.NDArray[np.int64] | None
    n_noise: int | None

    @property
    def boundary(self) -> Boundary:
        return Boundary(self.rows, self.chain)

    def problem(self, *, k: int, n_embeddings: int) -> str | None:
        """Why this checkpoint cannot be the state of a run with ``k`` clusters and
        ``n_embeddings`` rows (None: it can). Checked without reading the log."""
        if self.rows <= 0 or self.rows % SEGMENT_ROWS or self.rows > n_embeddings:
            return f"it covers {self.rows} rows, not a segment boundary of the run"
        if self.seq < self.rows + 1:
            return f"its seq {self.seq} is too small for {self.rows} rows"
        if len(self.chain) != 32:
            return "its chain value is not 32 bytes"
        if self.sizes is None or self.n_noise is None:
            return "its cluster sizes are unreadable"
        if len(self.sizes) > k or (len(self.sizes) and int(self.sizes.min()) < 0):
            return f"its cluster sizes are not those of k={k} clusters"
        if self.n_noise < 0 or int(self.sizes.sum()) + self.n_noise != self.rows:
            return f"its cluster sizes and noise do not add up to {self.rows} rows"
        return None


def write_checkpoint(recorder: Recorder, run_id: UUID, state: Checkpoint) -> None:
    """Store ``state`` as the run's checkpoint unless the stored one is as far already (a
    busy database is retried like an append)."""
    if state.sizes is None or state.n_noise is None:
        raise ValueError("a checkpoint needs its cluster sizes")
    t = checkpoints
    values = {
        "run_id": run_id,
        "rows": state.rows,
        "seq": state.seq,
        "chain": state.chain,
        "sizes": np.ascontiguousarray(state.sizes, dtype="<i8").tobytes(),
        "n_noise": state.n_noise,
    }
    insert = recorder.upsert_statement(t).values(**values)
    stmt = insert.on_conflict_do_update(
        index_elements=[t.c.run_id],
        set_={k: insert.excluded[k] for k in values if k != "run_id"},
        where=t.c.rows < insert.excluded.rows,
    )

    def attempt() -> None:
        with recorder.transaction(write=True) as conn:
            conn.execute(stmt)

    retrying(attempt, (DatabaseBusyError,), lambda e: e)


def read_checkpoint(recorder: Recorder, run_id: UUID) -> Checkpoint | None:
    """The run's checkpoint, or None (none stored, or no checkpoint table)."""
    t = checkpoints
    with recorder.transaction() as conn:
        if not inspect(conn).has_table(t.name):
            return None
        row = conn.execute(
            select(t.c.rows, t.c.seq, t.c.chain, t.c.sizes, t.c.n_noise).where(t.c.run_id == run_id)
        ).first()
    if row is None:
        return None
    blob = bytes(row[3])
    sizes = np.frombuffer(blob, dtype="<i8").astype(np.int64) if len(blob) % 8 == 0 else None
    return Checkpoint(int(row[0]), int(row[1]), bytes(row[2]), sizes, int(row[4]))

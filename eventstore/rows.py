"""A batch of read-model assignment rows as columns of numpy arrays: what the projections
hand a backend's bulk loader (``Recorder.insert_assignment_rows``), sorted by the table's
key (run_key, seq) so the B-tree only ever appends within a run. No Python object per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .codec import labels_of


@dataclass(frozen=True)
class AssignmentRows:
    run_key: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    embedding_id: npt.NDArray[np.void]  # V16
    cluster: npt.NDArray[np.int64]  # -1 for noise
    distance: npt.NDArray[np.float32]
    legacy_id: npt.NDArray[np.void]  # V16: an imported assignment's legacy row id
    has_legacy: npt.NDArray[np.bool_]  # whether ``legacy_id`` is set (else NULL)

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @classmethod
    def of(
        cls, run_key: int, seqs: npt.NDArray[np.int64], rec: npt.NDArray[np.void]
    ) -> AssignmentRows:
        """Rows of one run from ``codec.unpack_assignments`` records at ``seqs`` (records of
        the 47-byte layout carry a ``legacy_id``)."""
        n = seqs.shape[0]
        legacy = "legacy_id" in (rec.dtype.names or ())
        return cls(
            np.full(n, run_key, dtype=np.int64),
            seqs.astype(np.int64, copy=False),
            rec["embedding_id"],
            labels_of(rec),  # -1 for noise
            rec["distance"].astype(np.float32),
            rec["legacy_id"] if legacy else np.zeros(n, dtype="V16"),
            np.full(n, legacy, dtype=np.bool_),
        )

    @classmethod
    def concat(cls, parts: list[AssignmentRows]) -> AssignmentRows:
        """All parts, sorted by (run_key, seq)."""
        if len(parts) == 1:
            rows = parts[0]
        else:
            rows = cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))
        step = np.diff(rows.run_key)
        if ((step > 0) | ((step == 0) & (np.diff(rows.seq) > 0))).all():
            return rows
        return rows.take(np.lexsort((rows.seq, rows.run_key)))

    def take(self, index: npt.NDArray[Any]) -> AssignmentRows:
        return AssignmentRows(*(getattr(self, f)[index] for f in FIELDS))


LAST_SEQ = 2**63 - 1  # no upper bound on a seq range (the largest 64-bit seq)
FIELDS = ("run_key", "seq", "embedding_id", "cluster", "distance", "legacy_id", "has_legacy")
COLUMNS = FIELDS[:6]  # the read-model table's columns, in this order

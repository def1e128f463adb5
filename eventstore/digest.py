"""The run digest: the fingerprint of a run's assignments, the one place that computes it.

Every digest of a run's assignments (the writer's, a replay's, ``runs verify``'s, the read
model's) is an ``AssignmentDigest`` of the version the run's ``RunStarted.digest_version``
declares:

- **version 1** (runs started before version 2 existed; their RunStarted has no field):
  ``sha256(payload_0 || payload_1 || ...)`` over the assignment payloads in seq order.
- **version 2** (new runs): the assignments are cut by row index into segments of
  ``SEGMENT_ROWS`` (16,384) rows (independent of batching, resumes and seqs); with
  ``chain_0`` = 32 zero bytes, ``chain_i = sha256(chain_{i-1} || sha256(payloads of segment
  i))``; the digest is the hex of the last chain value, the last (partial) segment
  included. A run without assignments has no segment: its digest is ``chain_0``, 64 zeros.

A sha256 state cannot be saved, but a chain value can: version 2's state at a segment
boundary is 32 bytes (``Boundary``), which is what a checkpoint stores, so a resumed writer
continues the digest without reading the rows before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

SEGMENT_ROWS: Final = 16_384
DigestVersion = Literal[1, 2]  # RunStarted refuses any other (a decode error naming the seq)
DIGEST_V1: Final = 1
DIGEST_V2: Final = 2
DIGEST_VERSIONS: tuple[DigestVersion, ...] = (DIGEST_V1, DIGEST_V2)
CURRENT_DIGEST_VERSION: Final = DIGEST_V2
CHAIN_0 = bytes(32)


class DeclaresDigest(Protocol):
    """What a run's digest version is read from: its RunStarted."""

    @property
    def digest_version(self) -> DigestVersion: ...


@dataclass(frozen=True)
class Boundary:
    """A version-2 digest's state after ``rows`` assignments, ``rows`` a multiple of
    ``SEGMENT_ROWS``: the chain value over the segments before it."""

    rows: int
    chain: bytes


def chain_step(chain: bytes, segment_digest: bytes) -> bytes:
    """``chain_i`` from ``chain_{i-1}`` and the sha256 of segment i's payloads."""
    return hashlib.sha256(chain + segment_digest).digest()


class AssignmentDigest:
    """The running digest of a run's assignments, in row order (see the module docstring).

    ``update(data, count)`` takes ``count`` payloads of one width back to back, or a list of
    payloads (any widths: a damaged log's are hashed as they are). ``hexdigest()`` does not
    end the digest; more rows may follow. ``watch(rows)`` asks a version-2 digest to keep
    the ``Boundary`` at ``rows`` when it passes it (``boundary_at``)."""

    def __init__(self, version: int = CURRENT_DIGEST_VERSION, *, start: Boundary | None = None):
        if version not in DIGEST_VERSIONS:
            raise ValueError(f"unknown digest version {version}")
        if start is not None and (version != DIGEST_V2 or start.rows % SEGMENT_ROWS):
            raise ValueError("only a version-2 digest starts at a segment boundary")
        self.version = version
        self.count = 0 if start is None else start.rows
        self._h = hashlib.sha256()  # v1: everything; v2: the current segment
        self._chain = CHAIN_0 if start is None else start.chain
        self._last = start or Boundary(0, CHAIN_0)
        self._watched: dict[int, Boundary | None] = {}

    @classmethod
    def for_run(cls, started: DeclaresDigest | None) -> AssignmentDigest:
        """The digest of the run whose RunStarted is ``started``; without one (unreadable),
        version 1's, as for the runs stored before the field existed."""
        return cls(started.digest_version if started is not None else DIGEST_V1)

    @property
    def last_boundary(self) -> Boundary | None:
        """The state at the last segment boundary passed (version 2; None for version 1)."""
        return self._last if self.version == DIGEST_V2 else None

    def watch(self, rows: int) -> None:
        """Keep the boundary at ``rows`` (a multiple of ``SEGMENT_ROWS``) when passed."""
        if self.version == DIGEST_V2 and rows % SEGMENT_ROWS == 0:
            self._watched.setdefault(rows, self._last if rows == self._last.rows else None)

    def boundary_at(self, rows: int) -> Boundary | None:
        """The watched boundary at ``rows``, once passed (else None)."""
        return self._watched.get(rows)

    def update(self, data: bytes | Sequence[bytes], count: int | None = None) -> None:
        """Add assignments in row order: ``count`` payloads of one width back to back in
        ``data``, or a list of payloads."""
        if isinstance(data, bytes | bytearray | memoryview):
            n = int(count if count is not None else 0)
            if n == 0:
                if len(data):
                    raise ValueError("payload bytes given without a row count")
                return
            if len(data) % n:
                raise ValueError(f"{len(data)} bytes are not {n} payloads of one width")
            if self.version == DIGEST_V1:
                self._h.update(data)
                self.count += n
                return
            self._segments(memoryview(data), n, len(data) // n)
            return
        payloads = list(data)
        if self.version == DIGEST_V1:
            for p in payloads:
                self._h.update(p)
            self.count += len(payloads)
            return
        done = 0
        while done < len(payloads):
            take = min(SEGMENT_ROWS - self.count % SEGMENT_ROWS, len(payloads) - done)
            for p in payloads[done : done + take]:
                self._h.update(p)
            done += take
            self._advance(take)

    def _segments(self, view: memoryview, n: int, width: int) -> None:
        done = 0
        while done < n:
            take = min(SEGMENT_ROWS - self.count % SEGMENT_ROWS, n - done)
            self._h.update(view[done * width : (done + take) * width])
            done += take
            self._advance(take)

    def _advance(self, rows: int) -> None:
        self.count += rows
        if self.count % SEGMENT_ROWS == 0:
            self._chain = chain_step(self._chain, self._h.digest())
            self._h = hashlib.sha256()
            self._last = Boundary(self.count, self._chain)
            if self.count in self._watched:
                self._watched[self.count] = self._last

    def hexdigest(self) -> str:
        if self.version == DIGEST_V1:
            return self._h.hexdigest()
        if self.count % SEGMENT_ROWS == 0:
            return self._chain.hex()
        return chain_step(self._chain, self._h.digest()).hex()


def digest_of(payloads: Sequence[bytes], version: int = CURRENT_DIGEST_VERSION) -> str:
    """The digest of a whole list of assignment payloads, in row order."""
    d = AssignmentDigest(version)
    d.update(payloads)
    return d.hexdigest()

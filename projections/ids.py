"""Deterministic ids for read-model rows, identical after any rebuild.

An ``embeddingcluster.id`` is a function of (run, seq) and a ``cluster_id`` a function of
(run, cluster index). Both are version-8 UUIDs laid out as

    8 bytes: sha256(domain || run id)[:8], with the version nibble set to 8
    8 bytes: (seq or cluster index) | 1 << 63 (big-endian; the top bits are the RFC variant)

so the views compute them with string concatenation from a per-run 16-hex-digit prefix,
ids of one run sort by seq, and two runs collide only if 60 bits of sha256 do.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

ASSIGNMENT_DOMAIN = b"clusterstore/embeddingcluster/id\x00"
CLUSTER_DOMAIN = b"clusterstore/embeddingcluster/cluster_id\x00"
_TOP = 1 << 63


def prefix(domain: bytes, run_id: UUID) -> str:
    """The 16 hex digits shared by every id of the run in ``domain``."""
    head = bytearray(hashlib.sha256(domain + run_id.bytes).digest()[:8])
    head[6] = 0x80 | (head[6] & 0x0F)
    return head.hex()


def _make(domain: bytes, run_id: UUID, n: int) -> UUID:
    if not 0 <= n < 1 << 62:
        raise ValueError(f"{n} is out of range for a read-model id")
    return UUID(prefix(domain, run_id) + format(n | _TOP, "016x"))


def assignment_id(run_id: UUID, seq: int) -> UUID:
    """``embeddingcluster.id`` of the assignment at ``seq`` of ``run_id``."""
    return _make(ASSIGNMENT_DOMAIN, run_id, seq)


def cluster_id(run_id: UUID, cluster: int) -> UUID:
    """``embeddingcluster.cluster_id`` of cluster index ``cluster`` of ``run_id``."""
    return _make(CLUSTER_DOMAIN, run_id, cluster)

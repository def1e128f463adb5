"""An independent, naive implementation of digest version 2 (``eventstore.digest``), written
from its definition, for tests to check the store's against."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SEGMENT = 16_384


def reference_digest_v2(payloads: Sequence[bytes]) -> str:
    """chain_0 = 32 zero bytes; chain_i = sha256(chain_{i-1} || sha256(segment i)); the hex
    of the last chain value (of chain_0 when there is no row)."""
    chain = bytes(32)
    for lo in range(0, len(payloads), SEGMENT):
        segment = hashlib.sha256(b"".join(payloads[lo : lo + SEGMENT])).digest()
        chain = hashlib.sha256(chain + segment).digest()
    return chain.hex()


def split(data: bytes, width: int = 29) -> list[bytes]:
    """Back-to-back payloads of one width, one by one."""
    return [data[i : i + width] for i in range(0, len(data), width)]

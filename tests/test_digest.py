"""The run digest (``eventstore.digest``): version 2's known answers, its independence of how
the rows are handed in, version 1 unchanged, and the state at segment boundaries."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterstore.eventstore.codec import pack_assignments
from clusterstore.eventstore.digest import (
    SEGMENT_ROWS,
    AssignmentDigest,
    Boundary,
    digest_of,
)
from tests.digest_ref import reference_digest_v2, split


def packed_rows(lo: int, hi: int) -> bytes:
    """Assignments for rows lo..hi-1: id = row, label row % 5 - 1 (-1 is noise), distance row."""
    r = np.arange(lo, hi, dtype=np.uint64)
    ids = np.zeros((hi - lo, 2), dtype=">u8")
    ids[:, 1] = r
    labels = (r % 5).astype(np.int64) - 1
    return pack_assignments(ids.view(np.uint8).reshape(-1, 16), labels, r.astype(np.float32)).data


N = 2 * SEGMENT_ROWS + 5
DATA = packed_rows(0, N)
PAYLOADS = split(DATA)

# Pinned once from the definition (tests/digest_ref.py); a change of either is a new version.
KNOWN_V2_PINNED = {
    0: "0" * 64,
    1: "d251b0dd1eb5d2e594e1380a435d9c8c70d13f6d4d05e0b0dd996ad182f66b57",
    SEGMENT_ROWS: "b07f5b8a985d5f01b20c71669c69bcbc7866d04e92c987a242a6f82288abf937",
    N: "6ba82e5f05d64ecb5c504a9f363af51b59023afee9e2c643852fd612b4bd9c86",
}


def test_version_2_known_answers() -> None:
    assert SEGMENT_ROWS == 16_384
    # no row: no segment, the digest is chain_0
    assert AssignmentDigest(2).hexdigest() == "0" * 64 == reference_digest_v2([])
    one = PAYLOADS[0]
    chain_1 = hashlib.sha256(bytes(32) + hashlib.sha256(one).digest()).hexdigest()
    assert digest_of([one], 2) == chain_1
    for n, want in KNOWN_V2_PINNED.items():
        assert digest_of(PAYLOADS[:n], 2) == want == reference_digest_v2(PAYLOADS[:n]), n


def test_version_1_is_sha256_of_the_payloads() -> None:
    d = AssignmentDigest(1)
    d.update(DATA, N)
    assert d.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert (d.count, d.last_boundary) == (N, None)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, N), max_size=8), as_list=st.lists(st.booleans(), max_size=9))
def test_any_split_into_updates_gives_the_same_digest(cuts: list[int], as_list: list[bool]) -> None:
    bounds = [0, *sorted(cuts), N]
    for version in (1, 2):
        d = AssignmentDigest(version)
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            if as_list[i % len(as_list)] if as_list else False:
                d.update(PAYLOADS[lo:hi])
            else:
                d.update(DATA[lo * 29 : hi * 29], hi - lo)
        want = reference_digest_v2(PAYLOADS) if version == 2 else hashlib.sha256(DATA).hexdigest()
        assert (d.count, d.hexdigest()) == (N, want)


def test_hexdigest_does_not_end_the_digest() -> None:
    d = AssignmentDigest(2)
    d.update(DATA[: 100 * 29], 100)
    assert d.hexdigest() == reference_digest_v2(PAYLOADS[:100])
    d.update(DATA[100 * 29 :], N - 100)
    assert d.hexdigest() == reference_digest_v2(PAYLOADS)


def test_payloads_of_other_widths_are_cut_by_row() -> None:
    odd = [p + b"x" * (i % 3) for i, p in enumerate(PAYLOADS)]
    d = AssignmentDigest(2)
    d.update(odd[:7])
    d.update(odd[7:])
    assert d.hexdigest() == reference_digest_v2(odd)


def test_a_digest_continues_from_a_boundary() -> None:
    full = AssignmentDigest(2)
    full.watch(SEGMENT_ROWS)
    full.update(DATA, N)
    at = full.boundary_at(SEGMENT_ROWS)
    assert at is not None and at.rows == SEGMENT_ROWS
    assert full.last_boundary == Boundary(
        2 * SEGMENT_ROWS, bytes.fromhex(reference_digest_v2(PAYLOADS[: 2 * SEGMENT_ROWS]))
    )
    resumed = AssignmentDigest(2, start=at)
    resumed.update(DATA[SEGMENT_ROWS * 29 :], N - SEGMENT_ROWS)
    assert (resumed.count, resumed.hexdigest()) == (N, full.hexdigest())


def test_bad_versions_and_starts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown digest version 3"):
        AssignmentDigest(3)
    with pytest.raises(ValueError, match="segment boundary"):
        AssignmentDigest(2, start=Boundary(5, bytes(32)))
    with pytest.raises(ValueError, match="segment boundary"):
        AssignmentDigest(1, start=Boundary(SEGMENT_ROWS, bytes(32)))
    with pytest.raises(ValueError, match="one width"):
        AssignmentDigest(2).update(b"abc", 2)

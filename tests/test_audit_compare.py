"""compare: ARI and NMI against textbook formulas, the join on shared ids, relabelling."""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterstore.audit import compare_labels, compare_runs
from clusterstore.audit.compare import id_keys
from clusterstore.eventstore import EventStore
from tests.audit_data import RUN_A, RUN_B, RUN_C, embedding_ids, labels_for, make_run


def reference_ari(a: list[int], b: list[int]) -> float:
    """Pair counting over all n(n-1)/2 pairs: ARI = 2(ad - bc) / ((a+b)(b+d) + (a+c)(c+d))
    with a = pairs together in both, d = apart in both, b/c = together in one only."""
    together_both = apart_both = only_first = only_second = 0
    for i, j in combinations(range(len(a)), 2):
        same_a, same_b = a[i] == a[j], b[i] == b[j]
        if same_a and same_b:
            together_both += 1
        elif not same_a and not same_b:
            apart_both += 1
        elif same_a:
            only_first += 1
        else:
            only_second += 1
    if only_first == only_second == 0:
        return 1.0
    x, y, z, w = together_both, only_first, only_second, apart_both
    return 2 * (x * w - y * z) / ((x + y) * (y + w) + (x + z) * (z + w))


def reference_nmi(a: list[int], b: list[int]) -> float:
    """I(A;B) / ((H(A) + H(B)) / 2), natural log; 1.0 when both are one cluster."""
    n = len(a)
    ca, cb, cab = Counter(a), Counter(b), Counter(zip(a, b, strict=True))
    if len(ca) == len(cb) == 1:
        return 1.0
    mi = sum(v / n * math.log(n * v / (ca[x] * cb[y])) for (x, y), v in cab.items())
    if mi <= 0:
        return 0.0
    ha = -sum(v / n * math.log(v / n) for v in ca.values())
    hb = -sum(v / n * math.log(v / n) for v in cb.values())
    return mi / ((ha + hb) / 2)


def keys(n: int, seed: int = 0) -> np.ndarray:
    return id_keys(embedding_ids(n, seed).view("V16").reshape(-1))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
)
def test_scores_match_the_reference_formulas(pairs: list[tuple[int, int]], seed: int) -> None:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    n = len(pairs)
    k = keys(n, seed % 1000)
    order = np.random.default_rng(seed).permutation(n)  # run B lists the ids in another order
    result = compare_labels(k, np.array(a), k[order], np.array(b)[order])
    assert result.shared == n
    assert result.ari == pytest.approx(reference_ari(a, b), abs=1e-12)
    assert result.nmi == pytest.approx(reference_nmi(a, b), abs=1e-12)


def test_only_shared_ids_count() -> None:
    k = keys(30)
    la, lb = labels_for(30, 3, 1), labels_for(30, 3, 2)
    result = compare_labels(k[:20], la[:20], k[10:], lb[10:])
    assert (result.shared, result.only_a, result.only_b) == (10, 10, 10)
    assert result.ari == pytest.approx(reference_ari(la[10:20].tolist(), lb[10:20].tolist()))


def test_duplicates_count_once_first_wins() -> None:
    k = keys(10)
    la = np.arange(10) % 2
    dup_keys = np.concatenate([k, k[:3]])
    dup_labels = np.concatenate([la, 1 - la[:3]])  # the later, different labels are ignored
    result = compare_labels(dup_keys, dup_labels, k, la)
    assert (result.shared, result.duplicates_a, result.ari) == (10, 3, 1.0)


def test_no_shared_ids() -> None:
    result = compare_labels(keys(5, 1), np.zeros(5, int), keys(5, 2), np.zeros(5, int))
    assert (result.shared, result.only_a, result.only_b) == (0, 5, 5)
    assert result.ari is None and result.nmi is None and result.overlaps == []


def test_overlaps_are_largest_first() -> None:
    k = keys(10)
    a = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    b = np.array([5, 5, 5, 6, 7, 7, 7, 6, 6, 8])
    result = compare_labels(k, a, k, b, top=3)
    got = [(o.cluster_a, o.cluster_b, o.count) for o in result.overlaps]
    assert got == [(0, 5, 3), (1, 7, 3), (2, 6, 2)]
    assert result.overlaps[0].share_of_a == 0.75 and result.overlaps[0].share_of_b == 1.0


def test_a_run_against_itself_and_a_relabelled_copy(store: EventStore) -> None:
    n, k = 200, 5
    labels = labels_for(n, k, 3)
    make_run(store, RUN_A, n=n, k=k, labels=labels)
    relabel = np.array([3, 0, 4, 1, 2])
    make_run(store, RUN_B, n=n, k=k, labels=relabel[labels], seed=9)
    make_run(store, RUN_C, n=n, k=k, seed=4)
    itself = compare_runs(store, RUN_A, RUN_A, page_size=64)
    assert (itself.ari, itself.nmi, itself.shared) == (1.0, 1.0, n)
    relabelled = compare_runs(store, RUN_A, RUN_B, page_size=64)
    assert relabelled.ari == 1.0 and relabelled.nmi == pytest.approx(1.0)
    assert all(relabel[o.cluster_a] == o.cluster_b for o in relabelled.overlaps)
    other = compare_runs(store, RUN_A, RUN_C)
    expected = reference_ari(labels.tolist(), labels_for(n, k, 4).tolist())
    assert other.ari == pytest.approx(expected, abs=1e-12)
    assert other.ari < 0.2


def test_large_tables_use_the_sparse_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    k = keys(300)
    a, b = rng.integers(0, 40, 300), rng.integers(0, 40, 300)
    dense = compare_labels(k, a, k, b)
    monkeypatch.setattr("clusterstore.audit.compare.DENSE_CELLS", 1)
    sparse = compare_labels(k, a, k, b)
    assert dense == sparse


def test_hash_collisions_fall_back_to_the_exact_join(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    k = keys(200)
    k[:, 0] = k[:100, 0].repeat(2)  # pairs of ids share their first half
    a, b = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    dup_keys = np.concatenate([k, k[:10]])
    dup_a = np.concatenate([a, 4 - a[:10]])
    hashed = compare_labels(dup_keys, dup_a, k[::-1], b[::-1])
    monkeypatch.setattr(
        "clusterstore.audit.compare._hash", lambda keys: keys[:, 0].copy()
    )  # collides
    exact = compare_labels(dup_keys, dup_a, k[::-1], b[::-1])
    assert hashed == exact
    assert (exact.shared, exact.duplicates_a) == (200, 10)
    assert exact.ari == pytest.approx(reference_ari(a.tolist(), b.tolist()), abs=1e-12)

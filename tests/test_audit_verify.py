"""verify: a whole run passes; every kind of tampering around the store is found, on both
backends, naming the run and the first bad seq."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from clusterstore import projections
from clusterstore.audit import ReadModelCheck, verify_run, verify_runs
from clusterstore.eventstore import EventStore, RunCompleted
from clusterstore.eventstore.codec import encode
from clusterstore.eventstore.runs import resume_run
from tests.audit_data import (
    RUN_A,
    RUN_B,
    delete_row,
    distances_for,
    drop_triggers,
    embedding_ids,
    flip_byte,
    insert_row,
    labels_for,
    make_run,
    set_payload,
    stored_payload,
)

PROJECTIONS_CHECK = ReadModelCheck(
    projections.read_model_digest, projections.first_read_model_difference
)
# make_run(n=50): seq 1 RunStarted, 2 CentroidsComputed, 3-52 assignments, 53 RunCompleted.
END = 53


def kinds(store: EventStore) -> list[tuple[str, int | None]]:
    report = verify_run(store, RUN_A, page_size=16)  # small pages: findings span pages
    for f in report.findings:
        assert f.run_id == RUN_A
        assert f.line().startswith(f"{RUN_A} seq {f.seq}: " if f.seq is not None else f"{RUN_A}")
    return [(f.kind, f.seq) for f in report.findings]


def test_whole_runs_verify(store: EventStore) -> None:
    make_run(store, RUN_A)
    make_run(store, RUN_B, end="fail", rows=20, centroids=False)
    for run in (RUN_A, RUN_B):
        report = verify_run(store, run, page_size=16)
        assert report.findings == []
        assert report.ok
    a = verify_run(store, RUN_A)
    assert (a.events, a.head, a.n_assignments) == (53, 53, 50)
    assert a.digest == a.recorded_digest
    assert sum(a.cluster_sizes) == 50 and len(a.cluster_sizes) == 4


def test_a_resumed_run_verifies(store: EventStore) -> None:
    make_run(store, RUN_A, end="fail", rows=20)
    _, resumed = resume_run(store, RUN_A)
    ids = embedding_ids(50)
    resumed.record(ids[20:], labels_for(50, 4, 0)[20:], distances_for(50, 0)[20:])
    resumed.complete()
    report = verify_run(store, RUN_A, page_size=7)
    assert report.findings == []
    assert report.n_assignments == 50


Tamper = Callable[[EventStore], None]


def _change_cluster_within_k(store: EventStore) -> None:
    payload = stored_payload(store, RUN_A, 10)
    flip_byte(store, RUN_A, 10, 23, payload[23] ^ 1)  # cluster c -> c ^ 1, still below 4


def _nan_distance(store: EventStore) -> None:
    payload = stored_payload(store, RUN_A, 10)
    set_payload(store, RUN_A, 10, payload[:25] + bytes.fromhex("7fc00000"))


def _rewrite_completed(store: EventStore) -> None:
    (last,) = list(store.read(RUN_A, after=END - 1))
    assert isinstance(last.event, RunCompleted)
    forged = RunCompleted(
        count=49,
        digest=last.event.digest,
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        cluster_sizes=last.event.cluster_sizes,
    )
    set_payload(store, RUN_A, END, encode(forged).payload)


CASES: dict[str, tuple[Tamper, list[tuple[str, int | None]]]] = {
    "cluster changed, still valid": (
        _change_cluster_within_k,
        [("digest_mismatch", END), ("sizes_mismatch", END)],
    ),
    "cluster beyond k": (
        lambda s: flip_byte(s, RUN_A, 10, 20, 0x01),
        [("cluster_out_of_range", 10), ("digest_mismatch", END), ("sizes_mismatch", END)],
    ),
    "framing byte": (
        lambda s: flip_byte(s, RUN_A, 10, 0, 0x94),
        [("not_canonical", 10), ("digest_mismatch", END), ("sizes_mismatch", END)],
    ),
    "embedding id byte": (
        lambda s: flip_byte(s, RUN_A, 10, 5, stored_payload(s, RUN_A, 10)[5] ^ 0xFF),
        [("digest_mismatch", END)],
    ),
    "distance made NaN": (_nan_distance, [("bad_distance", 10), ("digest_mismatch", END)]),
    "assignment deleted": (
        lambda s: delete_row(s, RUN_A, 10),
        [
            ("missing", 10),
            ("count_mismatch", END),
            ("digest_mismatch", END),
            ("sizes_mismatch", END),
        ],
    ),
    "RunCompleted deleted": (lambda s: delete_row(s, RUN_A, END), [("missing", END)]),
    "row added after the end": (
        lambda s: insert_row(s, RUN_A, END + 1, stored_payload(s, RUN_A, 10)),
        [
            ("after_end", END + 1),
            ("uncommitted", END + 1),
            ("count_mismatch", END),
            ("digest_mismatch", END),
            ("sizes_mismatch", END),
        ],
    ),
    "row added far beyond": (
        lambda s: insert_row(s, RUN_A, 100, stored_payload(s, RUN_A, 10)),
        [
            ("missing", END + 1),
            ("after_end", 100),
            ("uncommitted", 100),
            ("count_mismatch", END),
            ("digest_mismatch", END),
            ("sizes_mismatch", END),
        ],
    ),
    "duplicate row at seq 0": (
        lambda s: insert_row(s, RUN_A, 0, stored_payload(s, RUN_A, 3)),
        [
            ("before_start", 0),
            ("count_mismatch", END),
            ("digest_mismatch", END),
            ("sizes_mismatch", END),
        ],
    ),
    "RunStarted undecodable": (
        lambda s: set_payload(s, RUN_A, 1, b"\xc1\x00"),
        [("undecodable", 1)],
    ),
    "RunCompleted rewritten": (_rewrite_completed, [("count_mismatch", END)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_found(store: EventStore, case: str) -> None:
    tamper, expected = CASES[case]
    make_run(store, RUN_A)
    make_run(store, RUN_B, seed=1)
    drop_triggers(store)
    tamper(store)
    assert kinds(store) == expected
    assert verify_run(store, RUN_B).ok  # the other run is untouched


def test_repeated_findings_are_counted_not_repeated(store: EventStore) -> None:
    make_run(store, RUN_A)
    drop_triggers(store)
    for seq in (10, 20, 30):
        flip_byte(store, RUN_A, seq, 0, 0x94)
    report = verify_run(store, RUN_A, page_size=8)
    first = report.findings[0]
    assert (first.kind, first.seq) == ("not_canonical", 10)
    assert first.message.endswith("(and 2 more)")


def test_digest_finding_names_both_digests(store: EventStore) -> None:
    make_run(store, RUN_A)
    drop_triggers(store)
    flip_byte(store, RUN_A, 10, 5, 0)
    report = verify_run(store, RUN_A)
    (finding,) = report.findings
    assert report.recorded_digest is not None
    assert finding.message == (
        f"the assignments (seqs 3-52) hash to {report.digest[:16]}, "
        f"RunCompleted recorded {report.recorded_digest[:16]}"
    )


# ---------------------------------------------------------------- the read model check


def _check(answer: tuple[int, str] | None, first: int | None = None) -> ReadModelCheck:
    """A read model that holds ``answer`` for every run (None: it does not hold the run)."""
    return ReadModelCheck(lambda store, run_id: answer, lambda store, run_id: first)


def test_read_model_agreeing(store: EventStore) -> None:
    make_run(store, RUN_A)
    truth = verify_run(store, RUN_A)
    report = verify_run(store, RUN_A, read_model=_check((truth.n_assignments, truth.digest)))
    assert (report.read_model, report.ok) == ("ok", True)


def test_read_model_disagreeing(store: EventStore) -> None:
    make_run(store, RUN_A)
    truth = verify_run(store, RUN_A)
    report = verify_run(store, RUN_A, read_model=_check((49, "0" * 64)))
    assert report.read_model == "mismatch"
    (finding,) = report.findings
    assert finding.line() == (
        f"{RUN_A}: the read model holds 49 assignments with digest 0000000000000000, "
        f"the log 50 with digest {truth.digest[:16]}"
    )


def test_read_model_disagreeing_names_the_first_difference(store: EventStore) -> None:
    make_run(store, RUN_A)
    report = verify_run(store, RUN_A, read_model=_check((50, "0" * 64), first=17))
    assert [(f.kind, f.seq) for f in report.findings] == [
        ("changed_assignment", 17),
        ("read_model_mismatch", None),
    ]


def test_read_model_absent(store: EventStore) -> None:
    make_run(store, RUN_A)
    report = verify_run(store, RUN_A, read_model=_check(None))
    assert (report.read_model, report.ok) == ("absent", True)


def test_no_read_model_check_given(store: EventStore) -> None:
    make_run(store, RUN_A)
    report = verify_run(store, RUN_A)
    assert (report.read_model, report.ok) == ("unavailable", True)
    (listed,) = verify_runs(store, [RUN_A])
    assert listed.read_model == "unavailable"


def test_the_projections_check_agrees_with_a_projected_run(store: EventStore) -> None:
    make_run(store, RUN_A)
    check = ReadModelCheck(projections.read_model_digest, projections.first_read_model_difference)
    assert verify_run(store, RUN_A, read_model=check).read_model == "absent"
    projections.catch_up_all(store)
    (report,) = verify_runs(store, [RUN_A], read_model=check)
    assert (report.read_model, report.ok) == ("ok", True)


def test_an_assignment_after_an_unresumed_failure(store: EventStore) -> None:
    make_run(store, RUN_A, end="fail", rows=20)  # seqs 1-22, RunFailed at 23
    insert_row(store, RUN_A, 24, stored_payload(store, RUN_A, 10))
    assert kinds(store) == [("after_failure", 24), ("uncommitted", 24)]


@pytest.mark.sqlite_only
def test_a_payload_rewritten_as_text_is_read_as_bytes(store: EventStore) -> None:
    """SQLite's || makes TEXT of BLOBs: the natural SQL edit must not break the reader."""
    make_run(store, RUN_A)
    drop_triggers(store)
    low = stored_payload(store, RUN_A, 10)[23]
    with store.recorder.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE cs_events SET payload = substr(payload, 1, 23) || ? || substr(payload, 25) "
            "WHERE run_id = ? AND seq = 10",
            (bytes([low ^ 1]), RUN_A.bytes),
        )
        kind = conn.exec_driver_sql(
            "SELECT typeof(payload) FROM cs_events WHERE run_id = ? AND seq = 10", (RUN_A.bytes,)
        ).scalar()
    assert kind == "text"
    assert kinds(store) == [("digest_mismatch", END), ("sizes_mismatch", END)]


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        pytest.param(_change_cluster_within_k, 10, id="changed-in-place"),
        pytest.param(lambda s: delete_row(s, RUN_A, 30), 30, id="removed"),
    ],
)
def test_the_read_model_pinpoints_a_change_the_digest_only_notices(
    store: EventStore, tamper: Tamper, first_bad: int
) -> None:
    make_run(store, RUN_A)
    projections.catch_up_all(store)  # projected before the change
    drop_triggers(store)
    tamper(store)
    report = verify_run(store, RUN_A, read_model=PROJECTIONS_CHECK)
    assert report.findings[0].seq == first_bad
    changed = next(f for f in report.findings if f.kind == "changed_assignment")
    assert changed.line() == (
        f"{RUN_A} seq {first_bad}: the stored assignment differs from the one projected into "
        "the read model (changed, removed or added around the store)"
    )
    assert report.read_model == "mismatch"
    assert projections.first_read_model_difference(store, RUN_B) is None  # not projected


def _grows_while_read(store: EventStore, monkeypatch: pytest.MonkeyPatch, head: int) -> None:
    """The first block read sees the run only up to ``head`` (its writer had not committed
    more yet); every later read sees it whole."""
    real = store.read_stream_block
    calls: list[int] = []

    def read(run_id: object, *, after: int, until: int) -> object:
        calls.append(after)
        return real(run_id, after=after, until=min(until, head) if len(calls) == 1 else until)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "read_stream_block", read)


def test_a_run_written_while_it_is_verified_is_read_whole(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block read while the run's writer was still committing ends short of its range;
    the next range starts after what was read, so nothing committed meanwhile is skipped
    (the load harness saw a completed run counted 19,998 assignments short)."""
    make_run(store, RUN_A)
    _grows_while_read(store, monkeypatch, head=10)
    report = verify_run(store, RUN_A, page_size=4)  # ranges of 20 seqs
    assert report.findings == []
    assert (report.events, report.head, report.n_assignments) == (END, END, 50)
    assert report.digest == report.recorded_digest


def test_assignment_blocks_of_a_run_written_meanwhile_are_whole(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clusterstore.audit._log import assignment_blocks

    make_run(store, RUN_A)
    _grows_while_read(store, monkeypatch, head=10)
    seqs = [int(s) for b in assignment_blocks(store, RUN_A, page_size=4) for s in b.seqs]
    assert seqs == list(range(3, END))

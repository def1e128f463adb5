"""Noise (label -1, the outliers of HDBSCAN and BERTopic) through the whole store: the
writer, the log's encoding, the replay, the read models, show, compare, verify and export,
on both backends. Runs without noise, and old logs, read and export exactly as before."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from clusterstore import audit, projections
from clusterstore.cli.main import cli
from clusterstore.eventstore import EventStore, InputError, RunCompleted
from clusterstore.eventstore.codec import (
    ASSIGNMENT_WIDTH,
    AssignmentDigest,
    assignments_from_payloads,
    count_labels,
    decode,
    encode,
    is_canonical_assignment,
    labels_of,
    pack_assignments,
    unpack_assignments,
)
from clusterstore.eventstore.errors import EventDecodeError
from clusterstore.eventstore.events import AssignmentRecorded
from clusterstore.eventstore.runs import read_progress, start_run
from tests.audit_data import (
    RUN_A,
    RUN_B,
    drop_triggers,
    embedding_ids,
    make_run,
    set_payload,
    stored_payload,
)
from tests.contracts.support import snapshot
from tests.test_event_evolution import fixture_rows, load_fixture

NOISY = UUID("0190aaaa-00ee-7000-8000-0000000000ee")
LABELS = np.array([0, -1, 2, 1, -1, 0, 2, -1, 1, 0, -1, 2])  # k = 3, 4 noise
SIZES = [3, 2, 3]


def record_noisy(
    store: EventStore,
    run_id: UUID = NOISY,
    labels: npt.NDArray[np.int64] = LABELS,
    *,
    k: int | None = None,
    batch_size: int = 5,
    algorithm: str = "hdbscan",
) -> RunCompleted:
    n = len(labels)
    with start_run(
        store,
        model="mpnet",
        algorithm=algorithm,
        n_embeddings=n,
        dim=2,
        k=k if k is not None else int(labels.max()) + 1,
        run_id=run_id,
        batch_size=batch_size,
    ) as run:
        run.record(embedding_ids(n), labels, np.linspace(0, 1, n, dtype=np.float32))
    completion = run.completion
    assert completion is not None
    return completion


def invoke(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--db", db_url, *args])


# ---------------------------------------------------------------- the encoding


def test_noise_is_msgpack_int32_minus_one_in_the_fixed_layout() -> None:
    eid = uuid.UUID(int=7)
    raw = encode(AssignmentRecorded(embedding_id=eid, cluster=-1, distance=0.5))
    assert raw.payload == (
        b"\x93\xc4\x10" + eid.bytes + b"\xd2\xff\xff\xff\xff\xca" + struct.pack(">f", 0.5)
    )
    assert len(raw.payload) == ASSIGNMENT_WIDTH and is_canonical_assignment(raw.payload)
    assert decode(*raw).cluster == -1  # plain msgpack: any decoder reads -1
    generic = msgspec.msgpack.Encoder(uuid_format="bytes").encode(
        AssignmentRecorded(embedding_id=eid, cluster=-1, distance=0.5)
    )
    assert decode(raw.type, raw.version, generic) == decode(*raw)


def test_packed_noise_reads_back_through_every_decoder() -> None:
    packed = pack_assignments(np.zeros((len(LABELS), 16), np.uint8), LABELS, np.zeros(12))
    singles = [decode(*r).cluster for r in packed.raw()]  # type: ignore[attr-defined]
    assert singles == LABELS.tolist()
    assert labels_of(unpack_assignments(packed.data)).tolist() == LABELS.tolist()
    payloads = [packed.payload(i) for i in range(packed.count)]
    assert assignments_from_payloads(payloads)["cluster"].tolist() == LABELS.tolist()
    sizes, n_noise = count_labels(labels_of(unpack_assignments(packed.data)), 3)
    assert (sizes.tolist(), n_noise) == (SIZES, 4)


def test_a_uint32_cluster_is_never_read_as_noise() -> None:
    """0xce ffffffff is cluster 4294967295, as it always was (an old run's label keeps its
    meaning); only the int32 marker is noise, and only with the value -1."""
    big = pack_assignments(np.zeros((1, 16), np.uint8), [0xFFFFFFFF], [0.0])
    assert big.data[19:24] == b"\xce\xff\xff\xff\xff"
    assert labels_of(unpack_assignments(big.data)).tolist() == [0xFFFFFFFF]
    assert assignments_from_payloads([big.data])["cluster"].tolist() == [0xFFFFFFFF]
    minus_two = bytearray(pack_assignments(np.zeros((1, 16), np.uint8), [-1], [0.0]).data)
    minus_two[20:24] = struct.pack(">i", -2)
    assert not is_canonical_assignment(bytes(minus_two))
    with pytest.raises(EventDecodeError, match="not in canonical layout"):
        unpack_assignments(bytes(minus_two))
    with pytest.raises(EventDecodeError, match="cluster -2, not a uint32 or -1"):
        assignments_from_payloads([bytes(minus_two)])


def test_labels_below_minus_one_are_refused_by_pack() -> None:
    with pytest.raises(InputError, match=r"between 0 and 2\*\*32-1, or -1 for noise"):
        pack_assignments(np.zeros((2, 16), np.uint8), [0, -2], [0.0, 1.0])


def test_the_v1_fixture_log_has_no_noise_and_reads_as_before(store: EventStore) -> None:
    rows = [r for r in fixture_rows() if r["name"] == "AssignmentRecorded"]
    payloads = [bytes.fromhex(r["payload"]) for r in rows]
    clusters = assignments_from_payloads(payloads)["cluster"].tolist()
    assert clusters == [r["expect"]["cluster"] for r in rows]
    assert min(clusters) >= 0
    for run in load_fixture(store):
        progress, writer = read_progress(store, run)
        assert writer.n_noise == 0
        if progress.completed is not None:
            assert progress.completed.n_noise == 0  # the field's default
            assert writer.digest.hexdigest() == progress.completed.digest
            assert writer.sizes.tolist() == progress.completed.cluster_sizes


# ---------------------------------------------------------------- the writer and the replay


def test_noise_is_stored_counted_and_in_no_cluster(store: EventStore) -> None:
    done = record_noisy(store)
    assert (done.count, done.n_noise, done.cluster_sizes) == (12, 4, SIZES)
    digest = AssignmentDigest()
    for raw in store.read_raw(NOISY):
        if raw.type == AssignmentRecorded.TYPE:
            digest.update(raw.payload, 1)
    assert (digest.count, digest.hexdigest()) == (12, done.digest)  # noise is in the digest
    stored = [e.cluster for _, e in store.read(NOISY) if isinstance(e, AssignmentRecorded)]
    assert stored == LABELS.tolist()
    progress, writer = read_progress(store, NOISY)  # the replay folds the same counts
    assert progress.completed == done
    assert (writer.n_noise, writer.sizes.tolist(), writer.digest.hexdigest()) == (
        4,
        SIZES,
        done.digest,
    )


def test_a_resumed_run_keeps_counting_noise(store: EventStore) -> None:
    run = start_run(
        store, model="m", algorithm="hdbscan", n_embeddings=12, dim=2, k=3, run_id=NOISY
    )
    ids, dists = embedding_ids(12), np.zeros(12, np.float32)
    run.record(ids[:5], LABELS[:5], dists[:5])
    run.fail("stopped")
    from clusterstore.eventstore.runs import resume_run

    _, writer = resume_run(store, NOISY)
    assert writer.n_noise == 2
    writer.record(ids[5:], LABELS[5:], dists[5:])
    assert (writer.complete().n_noise, writer.completion.cluster_sizes) == (4, SIZES)  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [-2, -7, np.iinfo(np.int64).min])
def test_labels_below_minus_one_name_the_row_and_write_nothing(store: EventStore, bad: int) -> None:
    run = start_run(store, model="m", algorithm="hdbscan", n_embeddings=12, dim=2, k=3)
    run.record(embedding_ids(12)[:3], LABELS[:3], np.zeros(3))
    before = snapshot(store)
    labels = LABELS[3:].copy()
    labels[4] = bad
    with pytest.raises(InputError, match=rf"row 7 has label {bad}; labels are 0 \.\. k-1"):
        run.record(embedding_ids(12)[3:], labels, np.zeros(9))
    assert snapshot(store) == before
    assert run.rows_done == 3 and run.n_noise == 1


# ---------------------------------------------------------------- the read models


def test_read_models_show_noise_with_a_null_cluster_id(store: EventStore) -> None:
    record_noisy(store)
    make_run(store, RUN_A, n=20, k=4)  # a run without noise beside it
    projections.catch_up_all(store)
    with store.recorder.transaction() as conn:
        rows = conn.execute(
            text(
                "SELECT seq, cluster, cluster_id FROM embeddingcluster "
                "WHERE run_id = :r ORDER BY seq"
            ),
            {"r": NOISY.hex if store.backend == "sqlite" else NOISY},
        ).all()
        sizes = conn.execute(
            text("SELECT cluster, size FROM clustersize WHERE run_id = :r ORDER BY cluster"),
            {"r": NOISY.hex if store.backend == "sqlite" else NOISY},
        ).all()
        results = dict(conn.execute(text("SELECT run_id, n_noise FROM clusteringresult")).all())
    assert [r[1] for r in rows] == LABELS.tolist()
    for _, cluster, cluster_id in rows:
        if cluster == -1:
            assert cluster_id is None
        else:
            expected = projections.cluster_id(NOISY, cluster)
            assert str(cluster_id).replace("-", "") == expected.hex
    assert [tuple(r) for r in sizes] == list(enumerate(SIZES))
    by_run = {UUID(str(k)): v for k, v in results.items()}
    assert (by_run[NOISY], by_run[RUN_A]) == (4, 0)
    done = read_progress(store, NOISY)[0].completed
    assert done is not None
    assert projections.read_model_digest(store, NOISY) == (12, done.digest)


def test_the_legacy_query_returns_noise_rows(store: EventStore) -> None:
    from sqlmodel import Session, create_engine, select

    from tests.legacy_models import EmbeddingCluster

    record_noisy(store)
    projections.catch_up_all(store)
    engine = create_engine(store.recorder.url)
    try:
        with Session(engine) as session:
            where = EmbeddingCluster.clustering_result_id == NOISY
            found = list(session.exec(select(EmbeddingCluster).where(where)).all())
    finally:
        engine.dispose()
    assert len(found) == 12
    assert sum(r.cluster_id is None for r in found) == 4


# ---------------------------------------------------------------- show, compare, verify


def test_show_counts_noise(store: EventStore, db_url: str) -> None:
    record_noisy(store)
    recorded = json.loads(invoke(db_url, "runs", "show", str(NOISY), "--json").stdout)
    shown = json.loads(invoke(db_url, "runs", "show", str(NOISY), "--json", "--verify").stdout)
    for data in (recorded, shown):  # as RunCompleted recorded them, and counted from the log
        assert (data["n_noise"], data["n_assignments"], data["k"]) == (4, 12, 3)
        assert data["cluster_sizes"] == SIZES
    assert recorded["integrity"] is None
    assert shown["integrity"]["ok"] and shown["integrity"]["n_noise"] == 4
    listed = json.loads(invoke(db_url, "runs", "list", "--json").stdout)
    assert listed[0]["n_noise"] == 4
    textual = invoke(db_url, "runs", "show", str(NOISY)).stdout
    assert "12 assignments (4 noise: label -1, in no cluster)" in textual
    assert "cluster sizes: 3 clusters, min 2, median 3, max 3" in textual


def test_events_show_noise_as_minus_one(store: EventStore, db_url: str) -> None:
    record_noisy(store)
    lines = invoke(db_url, "runs", "events", str(NOISY), "--type", "AssignmentRecorded").stdout
    clusters = [json.loads(line)["data"]["cluster"] for line in lines.splitlines()]
    assert clusters == LABELS.tolist()
    done = invoke(db_url, "runs", "events", str(NOISY), "--type", "RunCompleted").stdout
    assert json.loads(done)["data"]["n_noise"] == 4


def test_compare_treats_noise_as_its_own_class(store: EventStore, db_url: str) -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    other = np.array([0, -1, 1, 1, 0, 0, 1, -1, 1, 0, 2, -1])
    record_noisy(store)
    record_noisy(store, RUN_B, other)
    result = audit.compare_runs(store, NOISY, RUN_B)
    assert result.ari == adjusted_rand_score(LABELS, other)
    assert result.nmi == pytest.approx(normalized_mutual_info_score(LABELS, other), abs=1e-15)
    assert (result.noise, result.noise_a, result.noise_b) == ("own_class", 4, 3)
    assert (result.clusters_a, result.clusters_b) == (3, 3)  # noise is no cluster
    assert (-1, -1, 2, 2 / 4, 2 / 3) in [
        (o.cluster_a, o.cluster_b, o.count, o.share_of_a, o.share_of_b) for o in result.overlaps
    ]
    as_json = json.loads(invoke(db_url, "runs", "compare", str(NOISY), str(RUN_B), "--json").stdout)
    assert (as_json["noise"], as_json["n_noise_a"], as_json["n_noise_b"]) == ("own_class", 4, 3)
    textual = invoke(db_url, "runs", "compare", str(NOISY), str(RUN_B)).stdout
    assert (
        "noise       4 ids in A, 3 in B labelled -1; noise is compared as a class of its own "
        "(noise in both runs agrees)\n" in textual
    )


def test_verify_passes_a_noisy_run_and_catches_tampering(store: EventStore) -> None:
    record_noisy(store)
    projections.catch_up_all(store)
    check = audit.ReadModelCheck(
        projections.read_model_digest, projections.first_read_model_difference
    )
    report = audit.verify_run(store, NOISY, read_model=check)
    assert report.ok, report.findings
    assert (report.n_noise, report.cluster_sizes, report.read_model) == (4, SIZES, "ok")

    drop_triggers(store)
    noise_seq = 1 + 2  # RunStarted, then row 0 at seq 2: row 1 (noise) is seq 3
    payload = bytearray(stored_payload(store, NOISY, noise_seq))
    assert payload[19:24] == b"\xd2\xff\xff\xff\xff"
    payload[19:24] = b"\xce\x00\x00\x00\x00"  # noise -> cluster 0
    set_payload(store, NOISY, noise_seq, bytes(payload))
    kinds = {f.kind for f in audit.verify_run(store, NOISY, read_model=check).findings}
    assert {"digest_mismatch", "sizes_mismatch", "noise_mismatch", "changed_assignment"} <= kinds

    payload[19:24] = b"\xd2\xff\xff\xff\xfe"  # -2: not the canonical layout
    set_payload(store, NOISY, noise_seq, bytes(payload))
    found = audit.verify_run(store, NOISY).findings
    assert found[0].kind == "not_canonical" and found[0].seq == noise_seq


def test_verify_catches_a_cluster_turned_into_noise(store: EventStore) -> None:
    record_noisy(store)
    drop_triggers(store)
    payload = bytearray(stored_payload(store, NOISY, 2))  # row 0, cluster 0
    payload[19:24] = b"\xd2\xff\xff\xff\xff"
    set_payload(store, NOISY, 2, bytes(payload))
    findings = {f.kind: f.message for f in audit.verify_run(store, NOISY).findings}
    assert findings["noise_mismatch"] == (
        "RunCompleted counts 4 noise assignments (label -1), the log holds 5"
    )
    assert "digest_mismatch" in findings and "sizes_mismatch" in findings


# ---------------------------------------------------------------- export


def test_export_writes_noise_as_minus_one(store: EventStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    record_noisy(store)
    csv = tmp_path / "a.csv"
    audit.export_run(store, NOISY, csv, page_size=5)
    clusters = [int(line.split(",")[1]) for line in csv.read_text().splitlines()[1:]]
    assert clusters == LABELS.tolist()
    audit.export_run(store, NOISY, tmp_path / "a.npy", page_size=5)
    arr = np.load(tmp_path / "a.npy")
    assert arr.dtype["cluster"] == np.dtype("<i8")
    assert arr["cluster"].tolist() == LABELS.tolist()
    assert arr["embedding_id"].tobytes() == embedding_ids(12).tobytes()
    audit.export_run(store, NOISY, tmp_path / "a.parquet", page_size=5)
    table = pq.read_table(tmp_path / "a.parquet")
    assert str(table.schema.field("cluster").type) == "int64"
    assert table.column("cluster").to_pylist() == LABELS.tolist()


def test_an_incomplete_noisy_run_exports_signed(store: EventStore, tmp_path: Path) -> None:
    run = start_run(store, model="m", algorithm="hdbscan", n_embeddings=12, dim=2, k=3)
    run.record(embedding_ids(12)[:6], LABELS[:6], np.zeros(6))
    audit.export_run(store, run.run_id, tmp_path / "a.npy", allow_incomplete=True)
    arr = np.load(tmp_path / "a.npy")
    assert arr["cluster"].tolist() == LABELS[:6].tolist()


def test_noise_its_runcompleted_does_not_count_stops_the_export(
    store: EventStore, tmp_path: Path
) -> None:
    record_noisy(store, labels=np.array([0, 1, 2, 0]), batch_size=4)
    drop_triggers(store)
    payload = bytearray(stored_payload(store, NOISY, 3))
    payload[19:24] = b"\xd2\xff\xff\xff\xff"
    set_payload(store, NOISY, 3, bytes(payload))
    with pytest.raises(EventDecodeError, match=f"run {NOISY} seq 3: the run holds noise"):
        audit.export_run(store, NOISY, tmp_path / "a.npy")
    assert not (tmp_path / "a.npy").exists()


# The bytes a run without noise exported to before noise existed (commit f6040ff): runs
# without noise keep their unsigned cluster column and their exact bytes.
BEFORE_NOISE = {
    "csv": "a4ea5364d68e89badebd686ab56b1323e6e376e97ac285bc8f9c0c237666090d",
    "npy": "a5775ba713afecf63d02edcb767e4e875e099e8d9b95b8d162369f9d1f7afe4a",
}


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_a_run_without_noise_exports_the_same_bytes_as_before(
    store: EventStore, tmp_path: Path, fmt: str
) -> None:
    make_run(store, RUN_A, n=300, k=4, batch_size=64)
    path = tmp_path / f"a.{fmt}"
    audit.export_run(store, RUN_A, path, page_size=50)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BEFORE_NOISE[fmt]


def test_a_run_without_noise_keeps_the_unsigned_columns(store: EventStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    make_run(store, RUN_A, n=30, k=3)
    audit.export_run(store, RUN_A, tmp_path / "a.npy")
    assert np.load(tmp_path / "a.npy").dtype["cluster"] == np.dtype("<u4")
    audit.export_run(store, RUN_A, tmp_path / "a.parquet")
    assert str(pq.read_schema(tmp_path / "a.parquet").field("cluster").type) == "uint32"


# ---------------------------------------------------------------- HDBSCAN, end to end


def test_hdbscan_labels_round_trip_with_noise_intact(
    store: EventStore, db_url: str, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.datasets import load_digits
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    X = load_digits().data.astype(np.float32)
    labels = HDBSCAN(min_cluster_size=15, copy=True).fit_predict(X)
    assert (labels == -1).sum() > 0 and labels.min() == -1
    k = int(labels.max()) + 1
    record_noisy(store, NOISY, labels, k=k, batch_size=500)
    kmeans = KMeans(n_clusters=10, n_init=1, random_state=0).fit_predict(X)
    record_noisy(store, RUN_B, kmeans, k=10, batch_size=500, algorithm="kmeans-l2")
    projections.catch_up_all(store)

    shown = audit.run_details(store, NOISY)
    assert shown.n_noise == int((labels == -1).sum())
    assert shown.cluster_sizes == np.bincount(labels[labels >= 0], minlength=k).tolist()
    assert audit.verify_run(store, NOISY).ok

    audit.export_run(store, NOISY, tmp_path / "h.npy")
    arr = np.load(tmp_path / "h.npy")
    assert np.array_equal(arr["cluster"], labels)
    assert arr["embedding_id"].tobytes() == embedding_ids(len(labels)).tobytes()
    audit.export_run(store, NOISY, tmp_path / "h.parquet")
    assert pq.read_table(tmp_path / "h.parquet").column("cluster").to_pylist() == labels.tolist()
    audit.export_run(store, NOISY, tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[1]) for line in lines] == labels.tolist()

    result = audit.compare_runs(store, NOISY, RUN_B)
    assert result.ari == adjusted_rand_score(labels, kmeans)
    assert result.nmi == pytest.approx(normalized_mutual_info_score(labels, kmeans), abs=1e-15)
    assert result.noise_a == int((labels == -1).sum()) and result.noise_b == 0
    cli_json = json.loads(invoke(db_url, "runs", "verify", str(NOISY), "--json").stdout)
    assert cli_json["ok"] and cli_json["runs"][0]["n_noise"] == shown.n_noise

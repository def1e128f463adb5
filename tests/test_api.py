"""The Python API (``import clusterstore``): every verb on both backends, the id forms, the
read models kept current, and opening a store that writes nothing."""

from __future__ import annotations

import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import clusterstore
from clusterstore.eventstore import EventStore, ReadOnlyDatabaseError
from clusterstore.eventstore.runs import start_run
from tests.api_util import blobs, every_table, hex_id, uuids, view_rows
from tests.audit_data import drop_triggers, set_payload
from tests.pj_util import make_run


@pytest.fixture
def api(db_url: str) -> Iterator[clusterstore.Store]:
    with clusterstore.open(db_url) as store:
        yield store


def test_the_public_names_are_few_sorted_and_importing_is_cheap(
    subprocess_env: dict[str, str],
) -> None:
    names = clusterstore.__all__
    assert names == sorted(names) and 15 <= len(names) <= 25
    assert {"open", "Store", "Run", "EventStoreError", "InputError", "__version__"} <= set(names)
    for name in names:
        assert hasattr(clusterstore, name)
    assert issubclass(clusterstore.InputError, clusterstore.EventStoreError)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, clusterstore; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('faiss', 'pyarrow', 'sklearn')))",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded.strip() == "[]"


def test_the_views_exist_from_the_moment_a_store_is_created(api: clusterstore.Store) -> None:
    for view in ("embeddingcluster", "clustersize", "clusteringresult"):
        assert view_rows(api, f"SELECT count(*) FROM {view}") == [(0,)]


def test_opening_an_existing_store_writes_nothing(db_url: str, tmp_path: Path) -> None:
    with clusterstore.open(db_url) as store:
        run = store.record(uuids(6), [0, 1, 1, 0, 2, 2], model="m", algorithm="hdbscan")
        make_run(store.event_store, 5)  # appended around the API: the read models lag
        before = every_table(store)
    with clusterstore.open(db_url) as store:
        assert not store.event_store.created
        assert [r.run_id for r in store.runs()][-1] == run.run_id
        store.run(str(run.run_id)[:13])
        store.labels(run)
        store.compare(run, run)
        assert store.verify(run).ok
        store.verify()
        store.export(run, tmp_path / "out.csv")
        assert every_table(store) == before


def test_cluster_records_a_run_and_leaves_the_read_models_current(
    api: clusterstore.Store, backend: str
) -> None:
    x = blobs(300)
    given = uuids(300)
    run = api.cluster(x, ids=given, model="mini", k=4, seed=3)
    assert (run.status, run.model, run.algorithm, run.k) == ("completed", "mini", "kmeans-l2", 4)
    assert (run.n_embeddings, run.n_assignments, run.n_noise) == (300, 300, 0)
    assert sum(run.cluster_sizes or []) == 300 and run.parent_run_id is None
    assert run.input_digest and run.assignment_digest and run.duration_s is not None
    ids, clusters, distances = api.labels(run)
    assert ids.dtype == np.dtype("V16") and clusters.dtype == np.int64
    assert [uuid.UUID(bytes=i.tobytes()) for i in ids] == given
    assert np.bincount(clusters, minlength=4).tolist() == run.cluster_sizes
    assert distances.dtype == np.float32 and np.isfinite(distances).all()
    rows = view_rows(
        api,
        "SELECT count(*) FROM embeddingcluster WHERE run_id = :r",
        r=hex_id(run, backend),
    )
    assert rows == [(300,)]
    again = api.cluster(x, ids=given, model="mini", k=4, seed=3)  # same seed, same labels
    assert again.assignment_digest == run.assignment_digest
    spherical = api.cluster(x, model="mini", k=4, seed=3, spherical=True, iterations=5)
    assert spherical.algorithm == "kmeans-spherical"


def test_cluster_reads_a_file_with_its_options(api: clusterstore.Store, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", a=blobs(100), b=blobs(50))
    run = api.cluster(tmp_path / "x.npz", npz_key="b", model="m", k=2, seed=1)
    assert run.n_assignments == 50
    with pytest.raises(TypeError):
        api.cluster(blobs(10), npz_key="b", model="m", k=2)


def test_record_keeps_any_clusterings_labels(api: clusterstore.Store, backend: str) -> None:
    ids = uuids(8)
    labels = np.array([2, 0, 1, 1, 0, 2, 2, 0])
    run = api.record(ids, labels, model="m", algorithm="agglomerative", params={"linkage": "ward"})
    assert (run.status, run.algorithm, run.k, run.n_assignments) == (
        "completed",
        "agglomerative",
        3,
        8,
    )
    assert run.cluster_sizes == [3, 2, 3] and run.params == {"linkage": "ward"}
    got_ids, clusters, distances = api.labels(run)
    assert [uuid.UUID(bytes=i.tobytes()) for i in got_ids] == ids
    assert clusters.tolist() == labels.tolist()
    assert np.isnan(distances).all()  # none given
    assert api.verify(run).ok  # NaN distances are expected for labels recorded without them
    rows = view_rows(
        api,
        "SELECT cluster FROM embeddingcluster WHERE run_id = :r ORDER BY seq",
        r=hex_id(run, backend),
    )
    assert [r[0] for r in rows] == labels.tolist()
    with_distances = api.record(ids, labels, model="m", algorithm="x", distances=np.arange(8.0))
    assert api.labels(with_distances)[2].tolist() == list(range(8))


@pytest.mark.parametrize(
    "form",
    ["uuid", "str", "hex32-upper", "bytes", "v16", "uint8", "object-mix"],
)
def test_ids_in_every_form_are_the_same_ids(api: clusterstore.Store, form: str) -> None:
    ids = uuids(5, seed=9)
    forms = {
        "uuid": ids,
        "str": [str(u) for u in ids],
        "hex32-upper": np.array([u.hex.upper() for u in ids]),
        "bytes": [u.bytes for u in ids],
        "v16": np.frombuffer(b"".join(u.bytes for u in ids), dtype="V16"),
        "uint8": np.frombuffer(b"".join(u.bytes for u in ids), dtype=np.uint8).reshape(5, 16),
        "object-mix": np.array([ids[0], str(ids[1]), ids[2].bytes, ids[3].hex, ids[4]], object),
    }
    run = api.record(forms[form], [0, 1, 0, 1, 1], model="m", algorithm="x")
    got = [uuid.UUID(bytes=i.tobytes()) for i in api.labels(run)[0]]
    assert got == ids
    child = api.cluster(blobs(5, k=1), ids=forms[form], model="m", k=1, seed=0)
    assert [uuid.UUID(bytes=i.tobytes()) for i in api.labels(child)[0]] == ids


def test_the_run_writer_takes_uuid_strings(store: EventStore) -> None:
    ids = uuids(4)
    with start_run(store, model="m", algorithm="x", n_embeddings=4, dim=0, k=2) as writer:
        writer.record([str(u) for u in ids[:2]], [0, 1], [0.5, 0.5])
        writer.record(ids[2:], [1, 1], [0.5, 0.5])
    keys = [e.event for e in store.read(writer.run_id) if e.seq > 1][:4]
    assert [e.embedding_id for e in keys] == ids  # type: ignore[attr-defined]


def test_runs_run_and_prefixes(api: clusterstore.Store) -> None:
    a = api.record(uuids(3), [0, 0, 1], model="a", algorithm="x")
    b = api.record(uuids(3, seed=1), [0, 1, 1], model="b", algorithm="x")
    make_run(api.event_store, 4, recorded=2, fail=True)
    assert [r.run_id for r in api.runs()][1:] == [b.run_id, a.run_id]  # newest first
    assert [r.run_id for r in api.runs(model="a")] == [a.run_id]
    assert len(api.runs(status="failed")) == 1 and len(api.runs(status="completed")) == 2
    for ref in (a, a.run_id, str(a.run_id), a.run_id.hex[:20], str(a.run_id).upper()):
        assert api.run(ref).run_id == a.run_id
    with pytest.raises(clusterstore.InputError):
        api.runs(status="bogus")


def test_compare_verify_export_and_catch_up(api: clusterstore.Store, tmp_path: Path) -> None:
    ids = uuids(6)
    a = api.record(ids, [0, 0, 1, 1, 2, 2], model="m", algorithm="x")
    b = api.record(ids, [1, 1, 0, 0, 2, 2], model="m", algorithm="y")
    comparison = api.compare(a, b)
    assert (comparison.shared, comparison.ari, comparison.run_a) == (6, 1.0, a.run_id)
    assert isinstance(comparison, clusterstore.Comparison)
    reports = api.verify()
    assert [r.run_id for r in reports] == [a.run_id, b.run_id] and all(r.ok for r in reports)
    result = api.export(b, tmp_path / "b.csv")
    assert isinstance(result, clusterstore.ExportResult) and result.rows == 6
    assert (tmp_path / "b.csv").read_text().splitlines()[1] == f"{ids[0]},1,nan"
    with pytest.raises(clusterstore.OutputFileError):
        api.export(b, tmp_path / "b.csv")  # never replaced without force
    make_run(api.event_store, 4)
    assert api.catch_up() == {"clusteringresult": 7, "embeddingcluster": 7}
    assert api.catch_up() == {"clusteringresult": 0, "embeddingcluster": 0}


def test_a_read_model_that_cannot_be_updated_is_a_warning(
    api: clusterstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clusterstore import projections

    def busy(store: EventStore, **_: object) -> dict[str, int]:
        raise ReadOnlyDatabaseError("the read models are busy")

    monkeypatch.setattr(projections, "catch_up", busy)
    with pytest.warns(clusterstore.ReadModelWarning, match="the read models are busy"):
        run = api.record(uuids(2), [0, 1], model="m", algorithm="x")
    assert run.status == "completed"  # the log has it
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.catch_up()["embeddingcluster"] == 4


def test_a_damaged_run_is_a_warning_and_the_others_are_caught_up(
    api: clusterstore.Store,
) -> None:
    """A run with an event that does not decode is skipped by the read models (a dead
    letter), told as a ReadModelWarning; the other runs are brought up to date."""
    store = api.event_store
    damaged = make_run(store, 10, seed=1)
    drop_triggers(store)
    set_payload(store, damaged, 5, b"\xc1")
    healthy = make_run(store, 10, seed=2)
    with pytest.warns(clusterstore.ReadModelWarning, match=f"run {damaged} is damaged at seq 5"):
        api.catch_up()
    assert api.verify(healthy).ok
    visible = view_rows(api, "SELECT DISTINCT run_id FROM embeddingcluster")
    assert [uuid.UUID(str(r[0])) for r in visible] == [healthy]


def test_record_passes_noise_through(api: clusterstore.Store, backend: str) -> None:
    labels = np.array([0, -1, 1, 1, -1, 0, 2])
    run = api.record(uuids(7), labels, model="m", algorithm="hdbscan")
    assert (run.k, run.n_assignments, run.n_noise, run.cluster_sizes) == (3, 7, 2, [2, 2, 1])
    assert api.labels(run)[1].tolist() == labels.tolist()
    rows = view_rows(
        api,
        "SELECT cluster, cluster_id FROM embeddingcluster WHERE run_id = :r ORDER BY seq",
        r=hex_id(run, backend),
    )
    assert [r[0] for r in rows] == labels.tolist()
    assert [r[1] is None for r in rows] == (labels == -1).tolist()
    assert api.verify(run).ok


def test_verify_checks_the_read_model_and_report_and_which_answer(
    api: clusterstore.Store, tmp_path: Path
) -> None:
    ids = uuids(6)
    a = api.record(ids, [0, 0, 1, 1, 2, 2], model="m", algorithm="x")
    b = api.record(ids, [1, 1, 0, 0, -1, 2], model="m", algorithm="y")
    assert api.verify(a).read_model == "ok"  # the projections' check is handed in
    with api.event_store.transaction(write=True) as conn:
        conn.exec_driver_sql("DELETE FROM pj_ec_assignment_g1 WHERE seq = 3")
    assert api.verify(a).read_model == "mismatch" and not api.verify(a).ok
    found = api.which(ids[4])
    assert [(p.run_id, p.cluster, p.cluster_id is None) for p in found.placements] == [
        (a.run_id, 2, False),
        (b.run_id, -1, True),
    ]
    result = api.report(b, tmp_path / "b.html", compare_to=a)
    assert str(b.run_id) in (tmp_path / "b.html").read_text() and result.n_bytes > 0


def test_which_takes_an_id_in_every_form(api: clusterstore.Store) -> None:
    ids = uuids(3)
    run = api.record(ids, [0, 1, 1], model="m", algorithm="x")
    got, _, _ = api.labels(run)
    forms = [ids[1], str(ids[1]), ids[1].bytes, got[1], f"  {ids[1]}\n"]
    found = [[(p.run_id, p.cluster) for p in api.which(f).placements] for f in forms]
    assert found == [[(run.run_id, 1)]] * len(forms)
    with pytest.raises(clusterstore.InputError, match="is not an embedding id"):
        api.which("not-a-uuid")

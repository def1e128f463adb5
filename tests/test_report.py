"""The report, cluster members, matched clusters and texts files: content and bad input."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterstore.audit import (
    TextsSource,
    cluster_members,
    compare_labels,
    model_history,
    run_clusters,
    summarize_run,
    write_report,
)
from clusterstore.audit.compare import id_keys
from clusterstore.cli.main import cli
from clusterstore.eventstore import ClusterNotFoundError, EventStore, InputError, OutputFileError
from tests.audit_data import (
    RUN_A,
    RUN_B,
    RUN_C,
    distances_for,
    embedding_ids,
    labels_for,
    make_run,
)

VOCABULARY = {
    "run_id",
    "model",
    "algorithm",
    "k",
    "n_embeddings",
    "n_assignments",
    "n_noise",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "assignment_digest",
    "input_digest",
    "cluster_sizes",
}


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *args])


def report_data(html: str) -> dict[str, object]:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m is not None
    data: dict[str, object] = json.loads(m.group(1))
    return data


def uuid_of(row: np.ndarray) -> str:
    return str(UUID(bytes=row.tobytes()))


# ---------------------------------------------------------------- matched clusters


def brute_force_best(a: list[int], b: list[int]) -> int:
    """The largest total of shared ids over every one-to-one pairing (small k only)."""
    la, lb = sorted(set(a)), sorted(set(b))
    cells = {(x, y): 0 for x in la for y in lb}
    for x, y in zip(a, b, strict=True):
        cells[(x, y)] += 1
    small, big = (la, lb) if len(la) <= len(lb) else (lb, la)
    best = 0
    for perm in itertools.permutations(big, len(small)):
        pairs = zip(small, perm, strict=True) if small is la else zip(perm, small, strict=True)
        best = max(best, sum(cells[p] for p in pairs))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_matches_are_the_best_one_to_one_pairing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    a = rng.integers(0, 5, n)
    b = np.where(rng.random(n) < 0.7, (a + 2) % 6, rng.integers(0, 6, n))
    keys = id_keys(embedding_ids(n, seed).view("V16").ravel())
    result = compare_labels(keys, a, keys, b)
    assert result.matches is not None
    total = sum(m.shared for m in result.matches)
    assert total == brute_force_best(a.tolist(), b.tolist())
    assert result.n_changed == n - total
    assert len({m.cluster_a for m in result.matches}) == len(result.matches) == 5
    for m in result.matches:
        both = int(np.sum((a == m.cluster_a) & (b == m.cluster_b)))
        union = int(np.sum((a == m.cluster_a) | (b == m.cluster_b)))
        assert m.shared == both
        assert m.jaccard == pytest.approx(both / union)


def test_noise_is_matched_only_with_noise() -> None:
    a = np.array([-1, -1, -1, 0, 0, 1, 1, 1])
    b = np.array([0, 0, 0, -1, 1, 2, 2, -1])  # noise in A looks most like cluster 0 in B
    keys = id_keys(embedding_ids(8).view("V16").ravel())
    result = compare_labels(keys, a, keys, b)
    pairs = {(m.cluster_a, m.cluster_b) for m in result.matches or []}
    assert (-1, -1) in pairs
    assert all((x == -1) == (y == -1) for x, y in pairs)


def test_identical_runs_match_every_cluster_to_itself() -> None:
    labels = labels_for(100, 7, 3)
    keys = id_keys(embedding_ids(100).view("V16").ravel())
    result = compare_labels(keys, labels, keys, (labels + 3) % 7)
    assert result.matches is not None
    assert {(m.cluster_a, m.cluster_b) for m in result.matches} == {
        (c, (c + 3) % 7) for c in range(7)
    }
    assert all(m.jaccard == 1.0 for m in result.matches)
    assert result.n_changed == 0


def test_compare_json_lists_matches(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A, n=60, k=3, seed=0)
    make_run(store, RUN_B, n=60, k=3, seed=1)
    data = json.loads(run(db_url, "runs", "compare", str(RUN_A), str(RUN_B), "--json").stdout)
    assert len(data["matches"]) == 3
    assert set(data["matches"][0]) >= {"cluster_a", "cluster_b", "jaccard", "shared"}
    assert data["n_changed"] == 60 - sum(m["shared"] for m in data["matches"])


# ---------------------------------------------------------------- members


def test_nearest_members_are_the_smallest_distances(store: EventStore) -> None:
    n, k = 700, 5
    make_run(store, RUN_A, n=n, k=k, seed=4)
    labels, dists, ids = labels_for(n, k, 4), distances_for(n, 4), embedding_ids(n)
    # small pages: the bounded selection merges many blocks
    result = run_clusters(store, RUN_A, limit=4, page_size=37)
    assert result.sizes == np.bincount(labels, minlength=k).tolist()
    for c in result.clusters:
        mine = np.flatnonzero(labels == c.cluster)
        best = mine[np.argsort(dists[mine], kind="stable")][:4]
        assert [m.embedding_id for m in c.nearest] == [uuid_of(ids[i]) for i in best]
        assert [m.seq for m in c.nearest] == [int(i) + 3 for i in best]  # after 2 preamble
        assert c.mean_distance == pytest.approx(float(dists[mine].astype(np.float64).mean()))
        assert c.max_distance == pytest.approx(float(dists[mine].max()))
        assert sum(c.histogram) == len(mine)
        # the one-pass histogram equals numpy's over the final edges
        expected, _ = np.histogram(dists[mine].astype(np.float64), bins=result.bin_edges)
        assert c.histogram == expected.tolist()
    top = result.bin_edges[-1]
    assert float(dists.max()) < top <= 2 * float(dists.max())


def test_histogram_range_doubles_exactly(store: EventStore) -> None:
    """Distances that grow block after block: the range doubles, the counts stay exact."""
    n = 400
    dists = np.linspace(0.001, 37.0, n).astype(np.float32)  # later blocks hold larger ones
    make_run(store, RUN_A, n=n, k=2, distances=dists, labels=np.arange(n) % 2)
    result = run_clusters(store, RUN_A, page_size=25, bins=10)
    assert result.bin_edges[-1] == 64.0
    for c in result.clusters:
        mine = dists[np.arange(n) % 2 == c.cluster].astype(np.float64)
        assert c.histogram == np.histogram(mine, bins=result.bin_edges)[0].tolist()


def test_cluster_members_one_cluster(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A, n=300, k=4, seed=2)
    labels, dists, ids = labels_for(300, 4, 2), distances_for(300, 2), embedding_ids(300)
    stats = cluster_members(store, RUN_A, 3, limit=2, page_size=50)
    mine = np.flatnonzero(labels == 3)
    best = mine[np.argsort(dists[mine], kind="stable")][:2]
    assert stats.size == len(mine)
    assert [m.embedding_id for m in stats.nearest] == [uuid_of(ids[i]) for i in best]
    result = run(db_url, "runs", "show", str(RUN_A), "--cluster", "3", "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["size"] == len(mine)
    assert [m["embedding_id"] for m in data["nearest"]] == [uuid_of(ids[i]) for i in best]
    text = run(db_url, "runs", "show", str(RUN_A), "--cluster", "3", "--limit", "2").stdout
    assert f"cluster 3: {len(mine)} members" in text
    assert uuid_of(ids[best[0]]) in text


def test_unknown_cluster(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A, n=30, k=4)
    with pytest.raises(ClusterNotFoundError):
        cluster_members(store, RUN_A, 4)
    result = run(db_url, "runs", "show", str(RUN_A), "--cluster", "4")
    assert result.exit_code == 1
    assert result.output == f"Error: run {RUN_A} has no cluster 4; it has clusters 0 to 3\n"


# ---------------------------------------------------------------- the report


def test_report_holds_the_run(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=120, k=4, seed=0)
    out = tmp_path / "r.html"
    result = write_report(store, RUN_A, out)
    html = out.read_text()
    assert result.n_bytes == len(html.encode())
    data = report_data(html)
    assert set(data) >= VOCABULARY
    summary = summarize_run(store, RUN_A)
    assert summary.completed is not None
    assert data["run_id"] == str(RUN_A)
    assert data["k"] == 4
    assert data["n_assignments"] == 120
    assert data["cluster_sizes"] == np.bincount(labels_for(120, 4, 0), minlength=4).tolist()
    assert data["assignment_digest"] == summary.completed.digest
    assert str(data["started_at"]).endswith("Z")
    assert summary.completed.digest in html and "ab" * 32 in html
    assert 'id="verify">ok<' in html
    # self-contained: nothing that would load anything
    assert not re.search(r"(src|href)\s*=|@import|url\(|<link|<iframe|<img", html)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


def test_report_compare_and_history(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=80, k=3, seed=0)
    make_run(store, RUN_B, n=80, k=3, seed=1)
    make_run(store, RUN_C, n=80, k=3, seed=1)  # the same labels as B
    write_report(store, RUN_C, tmp_path / "r.html", compare_to=RUN_A)
    html = (tmp_path / "r.html").read_text()
    keys = id_keys(embedding_ids(80).view("V16").ravel())
    expected = compare_labels(keys, labels_for(80, 3, 1), keys, labels_for(80, 3, 0))
    assert expected.ari is not None
    assert f'id="ari">{expected.ari:.4f}<' in html
    assert "Hungarian" in html and '<svg class="heatmap"' in html
    history = model_history(store, summarize_run(store, RUN_C))
    assert [h.run_id for h in history] == [RUN_A, RUN_B, RUN_C]
    assert history[0].ari_to_previous is None
    assert history[2].ari_to_previous == 1.0  # B and C assign alike
    assert history[1].ari_to_previous == pytest.approx(expected.ari)


def test_report_to_stdout(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A, n=20, k=2)
    result = run(db_url, "report", str(RUN_A), "-o", "-", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert report_data(result.stdout)["run_id"] == str(RUN_A)


def test_report_escapes_texts(store: EventStore, tmp_path: Path) -> None:
    ids = embedding_ids(10)
    make_run(store, RUN_A, n=10, k=1, ids=ids, labels=np.zeros(10, int))
    texts = tmp_path / "t.csv"
    texts.write_text(
        "doc,body\n"
        + "".join(f"{uuid_of(r)},<script>alert({i})</script>\n" for i, r in enumerate(ids))
    )
    write_report(store, RUN_A, tmp_path / "r.html", texts=TextsSource(str(texts), "doc", "body"))
    html = (tmp_path / "r.html").read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(" in html


# ---------------------------------------------------------------- texts files


def _texts_rows(ids: np.ndarray, extra: int) -> list[tuple[str, str]]:
    rows = [(uuid_of(r), f"text number {i}") for i, r in enumerate(ids)]
    rows += [(str(UUID(int=i + 1)), "nobody") for i in range(extra)]
    rows.append(("not-a-uuid", "junk"))
    return rows


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_texts_beside_members_and_unmatched_ids_warn(
    store: EventStore, db_url: str, tmp_path: Path, fmt: str
) -> None:
    ids = embedding_ids(40)
    make_run(store, RUN_A, n=40, k=2, ids=ids, seed=5)
    rows = _texts_rows(ids, 3)
    path = tmp_path / f"texts.{fmt}"
    if fmt == "csv":
        path.write_text("eid,sentence\n" + "".join(f"{i},{t}\n" for i, t in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table({"eid": [r[0] for r in rows], "sentence": [r[1] for r in rows]}), path
        )
    source = TextsSource(str(path), "eid", "sentence")
    stats = cluster_members(store, RUN_A, 1, limit=3, texts=source)
    by_id = {uuid_of(r): f"text number {i}" for i, r in enumerate(ids)}
    assert [m.text for m in stats.nearest] == [by_id[m.embedding_id] for m in stats.nearest]
    assert stats.n_texts_unmatched == 4  # 3 unknown ids and one that is not a UUID
    args = ["runs", "show", str(RUN_A), "--cluster", "1", "--limit", "3"]
    result = run(
        db_url, *args, "--texts", str(path), "--id-column", "eid", "--text-column", "sentence"
    )
    assert result.exit_code == 0, result.output
    assert f"warning: 4 rows of {path} match no embedding of run {RUN_A}\n" in result.stderr
    assert by_id[stats.nearest[0].embedding_id] in result.stdout
    out = tmp_path / "r.html"
    report = run(
        db_url,
        "report",
        str(RUN_A),
        "-o",
        str(out),
        "--texts",
        str(path),
        "--id-column",
        "eid",
        "--text-column",
        "sentence",
    )
    assert report.exit_code == 0, report.output
    assert "warning: 4 of 44 rows of" in report.stderr
    assert by_id[stats.nearest[0].embedding_id] in out.read_text()


def test_texts_file_without_the_columns(store: EventStore, db_url: str, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=10, k=2)
    path = tmp_path / "t.csv"
    path.write_text("id,body\nx,y\n")
    with pytest.raises(InputError):
        cluster_members(store, RUN_A, 0, texts=TextsSource(str(path), "id", "text"))
    out = tmp_path / "r.html"
    result = run(db_url, "report", str(RUN_A), "-o", str(out), "--texts", str(path))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: texts file {path} has no column 'text' (its columns: id, body); name them "
        "with --id-column and --text-column\n"
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["t.csv", *_db_files(tmp_path)])
    missing = run(db_url, "report", str(RUN_A), "-o", str(out), "--texts", str(tmp_path / "no.csv"))
    assert missing.exit_code == 1
    assert (
        missing.output
        == f"Error: texts file {tmp_path / 'no.csv'} does not exist or is not a file\n"
    )


# ---------------------------------------------------------------- bad output paths and runs


def test_report_output_rules(store: EventStore, db_url: str, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=10, k=2)
    directory = tmp_path / "d.html"
    directory.mkdir()
    result = run(db_url, "report", str(RUN_A), "-o", str(directory))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {directory} is a directory, not a regular file; give a file name "
        "(or - for standard output)\n"
    )
    existing = tmp_path / "old.html"
    existing.write_text("keep me")
    result = run(db_url, "report", str(RUN_A), "-o", str(existing))
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    assert existing.read_text() == "keep me"
    if store.local_files():
        with pytest.raises(OutputFileError):
            write_report(store, RUN_A, store.local_files()[0], force=True)
    assert sorted(os.listdir(tmp_path)) == sorted(["d.html", "old.html", *_db_files(tmp_path)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_report_into_a_read_only_directory(store: EventStore, db_url: str, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=10, k=2)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run(db_url, "report", str(RUN_A), "-o", str(locked / "r.html"))
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write {locked / 'r.html'}")
    assert os.listdir(locked) == []


def test_report_is_named_html(store: EventStore, db_url: str, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=10, k=2)
    result = run(db_url, "report", str(RUN_A), "-o", str(tmp_path / "r.csv"))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {tmp_path / 'r.csv'}: a report is HTML; name the file .html (or - for stdout)\n",
    )
    assert not (tmp_path / "r.csv").exists()
    both = run(db_url, "report", str(RUN_A), "-o", "-", "--json")
    assert both.exit_code == 2


def test_report_of_an_unknown_run(store: EventStore, db_url: str, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=10, k=2)
    out = tmp_path / "r.html"
    for args in (["ffff"], [str(RUN_A), "--compare", "ffff"]):
        result = run(db_url, "report", *args, "-o", str(out))
        assert result.exit_code == 1
        assert result.output == (
            "Error: no run matches 'ffff'; `clusterstore runs list` shows them\n"
        )
    assert not out.exists()


def _db_files(directory: Path) -> list[str]:
    return [p for p in os.listdir(directory) if p.startswith("store.db")]


def test_kept_labels_are_load_labels(store: EventStore) -> None:
    from clusterstore.audit import load_labels

    make_run(store, RUN_A, n=90, k=3, seed=6)
    kept = run_clusters(store, RUN_A, keep_labels=True, page_size=16).labels
    assert kept is not None
    keys, labels = load_labels(store, RUN_A)
    assert np.array_equal(kept[0], keys) and np.array_equal(kept[1], labels)


def test_too_many_clusters_to_match(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = labels_for(100, 7, 3)
    keys = id_keys(embedding_ids(100).view("V16").ravel())
    monkeypatch.setattr("clusterstore.audit.compare.MATCH_CELLS", 48)  # 7 x 7 > 48
    result = compare_labels(keys, labels, keys, labels)
    assert result.matches is None and result.n_changed is None
    assert result.ari == 1.0

"""``clusterstore report``: one self-contained HTML file about a run (and a comparison).

Everything is inline: the stylesheet, the charts (SVG rendered here, ``charts``), and the
report's facts as a JSON block (``<script type="application/json" id="report-data">``,
which browsers never run); no script, font or image is loaded, so the page makes no
request when opened and can be mailed or attached to a ticket. The HTML comes from one
Jinja2 template (``templates/report.html``, package data) with autoescaping on, so ids,
model names and texts from the user's files are always escaped.

What it holds: the run's facts (model, algorithm, k, embeddings, noise, parameters, timings,
both digests, the verify result), the cluster sizes (sorted), each cluster's distance
distribution, size, mean and max distance and the members nearest the centroid (with their
texts when a texts file maps ids to texts), with ``compare_to`` the comparison (ARI, NMI,
clusters matched one to one with Jaccard and shared counts, a heatmap of the largest
clusters, how many embeddings changed their matched cluster), and the model's history
(its completed runs in time order, each with its ARI to the previous one).

Memory is bounded by the clusters, not the run (``members``), except the comparison and
the history, which hold two runs' labels at a time as numpy arrays (``compare``).
The file is written through ``output_file.open_output``: created, never substituted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import jinja2

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.errors import OutputFileError

from . import charts
from ._log import PAGE_SIZE, ProgressFn
from .compare import (
    Comparison,
    Contingency,
    Keys,
    Labels,
    compare_labels,
    compare_with_table,
    dense_table,
    load_labels,
)
from .details import run_details
from .members import RunClusters, run_clusters
from .output_file import STDOUT, open_output
from .summary import RunSummary, list_runs, summarize_run
from .texts import Texts, TextsSource, check_texts_file, load_texts

MEMBERS = 5  # members nearest the centroid shown per cluster
HISTORY = 12  # the model's runs shown (the latest, up to the reported one)
HEATMAP = 20  # clusters of each run in the comparison heatmap


@dataclass(frozen=True)
class HistoryEntry:
    run_id: UUID
    started_at: datetime
    k: int | None
    n_assignments: int
    ari_to_previous: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "started_at": timestamp(self.started_at),
            "k": self.k,
            "n_assignments": self.n_assignments,
            "ari_to_previous": self.ari_to_previous,
        }


@dataclass(frozen=True)
class ReportResult:
    run_id: UUID
    path: str
    n_bytes: int
    generation_s: float
    compared_to: UUID | None = None
    n_texts_unmatched: int | None = None  # rows of the texts file that match no embedding
    texts_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "path": self.path,
            "n_bytes": self.n_bytes,
            "generation_s": self.generation_s,
            "compared_to": None if self.compared_to is None else str(self.compared_to),
            "n_texts_unmatched": self.n_texts_unmatched,
            "warnings": self.warnings,
        }


def write_report(
    store: EventStore,
    run_id: UUID,
    path: str | os.PathLike[str],
    *,
    compare_to: UUID | None = None,
    texts: TextsSource | None = None,
    members: int = MEMBERS,
    history: int = HISTORY,
    force: bool = False,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> ReportResult:
    """Write the report of ``run_id`` to ``path`` (``-``: standard output)."""
    started = time.perf_counter()
    check_report_path(path)
    summary = summarize_run(store, run_id)  # an unknown run fails before any file is made
    other = summarize_run(store, compare_to) if compare_to is not None else None
    if texts is not None:
        check_texts_file(texts.path, id_column=texts.id_column, text_column=texts.text_column)
    counter = _Counter()
    with open_output(path, force=force, protect=store.local_files()) as out:
        context, loaded = _context(
            store, summary, other, texts, members, history, page_size, on_progress
        )
        html = render(context)
        data = html.encode("utf-8")
        out.write(data)
        counter.n = len(data)
    warnings = []
    if loaded is not None and loaded.n_unmatched:
        warnings.append(
            f"{loaded.n_unmatched} of {loaded.n_rows} rows of {loaded.path} match no embedding "
            f"of run {run_id}"
        )
    return ReportResult(
        run_id=run_id,
        path=os.fspath(path),
        n_bytes=counter.n,
        generation_s=time.perf_counter() - started,
        compared_to=compare_to,
        n_texts_unmatched=None if loaded is None else loaded.n_unmatched,
        texts_path=None if loaded is None else loaded.path,
        warnings=warnings,
    )


class _Counter:
    n = 0


def check_report_path(path: str | os.PathLike[str]) -> None:
    """A report is HTML: its file is named .html or .htm (or is ``-``, standard output)."""
    text = os.fspath(path)
    if text != STDOUT and Path(text).suffix.lower() not in (".html", ".htm"):
        raise OutputFileError(f"{text}: a report is HTML; name the file .html (or - for stdout)")


def render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("clusterstore.audit", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["ts"] = lambda v: timestamp(v) or "-"
    return env.get_template("report.html").render(**context)


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``."""
    if value is None:
        return None
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ------------------------------------------------------------------ gathering


def _context(
    store: EventStore,
    summary: RunSummary,
    other: RunSummary | None,
    texts: TextsSource | None,
    members: int,
    history: int,
    page_size: int,
    on_progress: ProgressFn | None,
) -> tuple[dict[str, Any], Texts | None]:
    run_id = summary.run_id
    details = run_details(store, run_id, page_size=page_size, on_progress=on_progress)
    assert details.integrity is not None  # verify=True: always checked
    clusters = run_clusters(
        store,
        run_id,
        limit=members,
        keep_labels=True,
        page_size=page_size,
        on_progress=on_progress,
    )
    loaded = None
    if texts is not None:
        wanted = [m.embedding_id for c in clusters.clusters for m in c.nearest]
        loaded = load_texts(
            texts.path,
            id_column=texts.id_column,
            text_column=texts.text_column,
            wanted=wanted,
            run_hashes=clusters.id_hashes,
        )
    assert clusters.labels is not None
    known = {run_id: clusters.labels}  # each run's labels read once for both uses below
    comparison = None
    if other is not None:
        b = load_labels(store, other.run_id, page_size=page_size, on_progress=on_progress)
        known[other.run_id] = b
        result, table = compare_with_table(*clusters.labels, *b, top=0)
        comparison = _comparison_context(
            replace(result, run_a=run_id, run_b=other.run_id), table, other
        )
    facts = run_facts(summary, details, clusters)
    return (
        {
            "facts": facts,
            "data_json": _json(facts),
            "params": details.summary.started.params if details.summary.started else {},
            "verify": details.integrity,
            "clusters": _cluster_rows(clusters, loaded),
            "sizes_chart": charts.bars(
                sorted(clusters.sizes, reverse=True),
                label=f"cluster sizes of run {run_id}, largest first",
                y_label="clusters, largest first",
            ),
            "distance_chart": charts.bars(
                [sum(col) for col in zip(*(c.histogram for c in clusters.clusters), strict=True)]
                if clusters.clusters
                else [],
                label="distance to the centroid, all clusters",
                y_label=f"distance {_number(clusters.bin_edges[0])} .. "
                f"{_number(clusters.bin_edges[-1])}",
            ),
            "bin_edges": clusters.bin_edges,
            "texts": loaded,
            "comparison": comparison,
            "history": model_history(
                store, summary, limit=history, page_size=page_size, known=known
            ),
            "generated_at": timestamp(datetime.now(UTC)),
        },
        loaded,
    )


def run_facts(summary: RunSummary, details: Any, clusters: RunClusters) -> dict[str, Any]:
    """The run's facts under the project's JSON vocabulary."""
    s = summary.started
    return {
        "run_id": str(summary.run_id),
        "model": s.model if s else None,
        "algorithm": s.algorithm if s else None,
        "k": s.k if s else clusters.k,
        "n_embeddings": s.n_embeddings if s else None,
        "n_assignments": clusters.n_assignments,
        "n_noise": clusters.n_noise,
        "status": summary.status,
        "started_at": timestamp(summary.started_at),
        "finished_at": timestamp(summary.finished_at),
        "duration_s": summary.duration_s,
        "assignment_digest": summary.completed.digest if summary.completed else None,
        "input_digest": (s.input_digest or None) if s else None,
        "cluster_sizes": clusters.sizes,
        "verified": details.integrity is not None and details.integrity.ok,
    }


def _cluster_rows(clusters: RunClusters, texts: Texts | None) -> list[dict[str, Any]]:
    rows = []
    order = sorted(clusters.clusters, key=lambda c: (-c.size, c.cluster))
    for c in order:
        rows.append(
            {
                "cluster": c.cluster,
                "size": c.size,
                "mean": c.mean_distance,
                "max": c.max_distance,
                "spark": charts.spark(c.histogram, label=f"distances in cluster {c.cluster}"),
                "nearest": [
                    {
                        "id": m.embedding_id,
                        "distance": m.distance,
                        "text": texts.get(m.embedding_id) if texts else None,
                    }
                    for m in c.nearest
                ],
            }
        )
    return rows


def _comparison_context(
    c: Comparison, table: Contingency | None, other: RunSummary
) -> dict[str, Any]:
    matches = c.matches or []
    heatmap = None
    if table is not None and matches:
        # the largest clusters of A (by shared ids), against their matches in B
        biggest = sorted(matches, key=lambda m: (-m.size_a, m.cluster_a))[:HEATMAP]
        index_a = {int(v): i for i, v in enumerate(table.labels_a.tolist())}
        index_b = {int(v): i for i, v in enumerate(table.labels_b.tolist())}
        dense = dense_table(table)
        rows = [index_a[m.cluster_a] for m in biggest]
        cols = [index_b[m.cluster_b] for m in biggest]
        heatmap = charts.heatmap(
            dense[rows][:, cols].tolist(),
            [str(m.cluster_a) for m in biggest],
            [str(m.cluster_b) for m in biggest],
            label=f"shared embeddings of the {len(biggest)} largest clusters of A and their "
            "matches in B",
        )
    return {
        "other": other,
        "result": c,
        "matches": sorted(matches, key=lambda m: (-m.shared, m.cluster_a)),
        "heatmap": heatmap,
    }


def model_history(
    store: EventStore,
    summary: RunSummary,
    *,
    limit: int = HISTORY,
    page_size: int = PAGE_SIZE,
    known: dict[UUID, tuple[Keys, Labels]] | None = None,
) -> list[HistoryEntry]:
    """The completed runs of the run's model in time order, up to and including it (at most
    ``limit``, the latest), each with its ARI to the previous one. Two runs' labels are held
    at a time (``known``: labels already loaded, by run)."""
    if summary.model is None or limit <= 0:
        return []
    runs = [
        r
        for r in list_runs(store, status="completed", model=summary.model)
        if r.started_at <= summary.started_at or r.run_id == summary.run_id
    ]
    runs.sort(key=lambda r: (r.started_at, str(r.run_id)))
    runs = runs[-limit:]
    out: list[HistoryEntry] = []
    previous = None
    for r in runs:
        labels = (known or {}).get(r.run_id) or load_labels(store, r.run_id, page_size=page_size)
        ari = None
        if previous is not None:
            ari = compare_labels(*previous, *labels, top=0).ari
        out.append(
            HistoryEntry(
                r.run_id, r.started_at, r.started.k if r.started else None, r.n_assignments, ari
            )
        )
        previous = labels
    return out


def _json(value: Any) -> str:
    # "</" never appears inside the inline JSON block (it could end the <script> element)
    return json.dumps(value, allow_nan=False, default=str).replace("</", "<\\/")

"""``clusterstore runs list/show/events/verify/compare``: reading run history (``audit``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from uuid import UUID

import click

from clusterstore import audit, projections
from clusterstore.audit.details import RunDetails
from clusterstore.audit.summary import STATUS_LABELS, RunSummary
from clusterstore.audit.text import format_duration, format_time, size_histogram
from clusterstore.eventstore import EventStore
from clusterstore.eventstore.events import BY_NAME
from clusterstore.projections.dead_letter import (
    REPAIR,
    DeadLetter,
    damage_json,
    first_by_run,
    run_damage,
)

from ._options import (
    MAX_COUNT,
    MAX_SEQ,
    json_option,
    output_options,
    quiet_option,
    texts_options,
)
from ._output import echo_json, progress, render_table
from .projections import warn_if_behind

if TYPE_CHECKING:
    from ._context import StoreContext

STATUS_CHOICES = ["running", "incomplete", "completed", "failed", "damaged"]
# verify and show compare the log with the embeddingcluster read model (the audit itself
# never imports projections: the check is handed to it here)
READ_MODEL_CHECK = audit.ReadModelCheck(
    projections.read_model_digest,
    projections.first_read_model_difference,
    projections.projected_run,
    run_damage,
)


@click.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUS_CHOICES, case_sensitive=False),
    help="Only runs with this status (incomplete = running: no RunCompleted or RunFailed yet; "
    "damaged = the read models skip it from a damaged event on, whatever its log status).",
)
@click.option("--model", metavar="MODEL", help="Only runs of this embedding model.")
@output_options
@click.pass_obj
def list_runs(
    state: StoreContext, status: str | None, model: str | None, as_json: bool, quiet: bool
) -> None:
    """Runs, newest first."""
    store = state.open()
    wanted = audit.parse_status(status) if status and status != "damaged" else None
    runs = audit.list_runs(store, status=wanted, model=model)
    damaged = first_by_run(projections.dead_letters(store))
    if status == "damaged":
        runs = [r for r in runs if r.run_id in damaged]
    if as_json:
        echo_json([{**r.to_json(), "damage": damage_json(damaged.get(r.run_id))} for r in runs])
        warn_if_behind(store)
        return
    if not runs:
        filtered = status is not None or model is not None
        click.echo("No runs match." if filtered else f"No runs in {store.display_url}.")
        warn_if_behind(store)
        return
    digits = audit.id_digits(store)
    rows = [
        [
            audit.short_id(r.run_id, digits),
            r.model or "?",
            r.started.algorithm if r.started else "?",
            r.started.k if r.started else None,
            r.started.n_embeddings if r.started else None,
            "damaged" if r.run_id in damaged else r.status_label,
            format_time(r.started_at),
            format_duration(r.duration_s),
        ]
        for r in runs
    ]
    headers = ["run id", "model", "algorithm", "k", "n", "status", "started", "duration"]
    click.echo(render_table(headers, rows))
    for r in runs:
        if r.problem:
            click.echo(f"note: run {r.run_id}: {r.problem}", err=True)
        if r.run_id in damaged:
            click.echo(f"note: {_damage_text(r.run_id, damaged[r.run_id])}", err=True)
    warn_if_behind(store)


def _damage_text(run_id: UUID, letter: DeadLetter) -> str:
    return (
        f"run {run_id} is damaged at seq {letter.seq} (log position {letter.position}): "
        f"{letter.reason}; the read models skip it from there; {REPAIR}"
    )


@click.command("show")
@click.argument("run")
@click.option(
    "--cluster",
    type=click.IntRange(min=0, max=2**32 - 1),
    metavar="N",
    help="Show cluster N: its size, distances and the members nearest its centroid.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0, max=100_000),
    default=20,
    show_default=True,
    help="With --cluster: how many members to list.",
)
@click.option(
    "--verify",
    "check",
    is_flag=True,
    help="Also check the run as `runs verify` does (reads all of it and its read model) "
    "and show the result; without it a completed run's counts, digest and sizes are those "
    "its RunCompleted recorded, and its integrity is not checked.",
)
@texts_options
@output_options
@click.pass_obj
def show(
    state: StoreContext,
    run: str,
    cluster: int | None,
    limit: int,
    check: bool,
    texts: str | None,
    text_column: str,
    id_column: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Parameters, counts, status, timings and cluster sizes of one RUN, and its integrity
    with --verify (with --cluster N: that cluster's members nearest the centroid).

    A completed run is summarised from what it recorded (RunStarted, CentroidsComputed,
    RunCompleted), whatever its size; a run that has no RunCompleted is counted from its
    log, which checks it as well."""
    store = state.open()
    run_id = store.resolve_run(run)
    if cluster is not None:
        source = audit.TextsSource(texts, id_column, text_column) if texts else None
        with progress("reading the run", store.head(run_id), quiet=quiet or as_json) as bar:
            stats = audit.cluster_members(
                store, run_id, cluster, limit=limit, texts=source, on_progress=bar.update
            )
        if stats.n_texts_unmatched:
            click.echo(
                f"warning: {stats.n_texts_unmatched} rows of {texts} match no embedding of "
                f"run {run_id}",
                err=True,
            )
        if as_json:
            echo_json({"run_id": str(run_id), **stats.to_json()})
        else:
            click.echo("\n".join(_cluster_lines(run_id, stats)))
        return
    if texts is not None:
        raise click.UsageError("--texts goes with --cluster N")
    with progress("reading the run", store.head(run_id), quiet=quiet or as_json) as bar:
        details = audit.run_details(
            store, run_id, read_model=READ_MODEL_CHECK, verify=check, on_progress=bar.update
        )
    damage = first_by_run(projections.dead_letters(store, run_id)).get(run_id)
    if as_json:
        echo_json({**details.to_json(), "damage": damage_json(damage)})
    else:
        click.echo("\n".join(_details_lines(details, damage)))
    warn_if_behind(store)  # after the answer: a failed command prints its Error: line only


def _details_lines(d: RunDetails, damage: DeadLetter | None = None) -> list[str]:
    s: RunSummary = d.summary
    st = s.started
    rows: list[tuple[str, str]] = [("run", str(s.run_id)), ("status", _status_text(s))]
    if damage is not None:
        rows.append(("damaged", _damage_text(s.run_id, damage)))
    if st is not None:
        seed = f", seed {st.seed}" if st.seed is not None else ""
        rows += [
            ("model", st.model),
            ("algorithm", f"{st.algorithm} (k {st.k}, dim {st.dim}{seed})"),
            ("params", json.dumps(st.params, sort_keys=True) if st.params else "-"),
            ("input", f"{st.n_embeddings} embeddings, input digest {st.input_digest or '-'}"),
        ]
    if s.problem:
        rows.append(("problem", s.problem))
    noise = f" ({d.n_noise} noise: label -1, in no cluster)" if d.n_noise else ""
    rows.append(("events", f"{s.events}, {d.n_assignments} assignments{noise}"))
    if d.centroids is not None:
        rows.append(("centroids", _centroids_text(d)))
    rows.append(("started", f"{format_time(s.started_at)} UTC"))
    if s.finished_at is not None:
        took = format_duration(s.duration_s)
        rows.append(("finished", f"{format_time(s.finished_at)} UTC ({took})"))
    if s.failed is not None:
        kind = f"{s.failed.error_type}: " if s.failed.error_type else ""
        rows.append(("error", f"{kind}{s.failed.error}"))
    if d.recorded_digest is not None:
        rows.append(("result", f"assignment digest {d.recorded_digest}"))
    rows.append(("integrity", _integrity_text(d)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  {f.line()}" for f in d.integrity.findings] if d.integrity else []
    return [*lines, "", *size_histogram(d.cluster_sizes)]


def _cluster_lines(run_id: UUID, c: audit.ClusterStats) -> list[str]:
    def dist(v: float | None) -> str:
        return "-" if v is None else f"{v:.6g}"

    lines = [
        f"run {run_id}, cluster {c.cluster}: {c.size} members, distance mean "
        f"{dist(c.mean_distance)}, min {dist(c.min_distance)}, max {dist(c.max_distance)}",
    ]
    if not c.nearest:
        return lines
    with_text = any(m.text is not None for m in c.nearest)
    headers = ["embedding_id", "distance", "seq", *(["text"] if with_text else [])]
    rows = [
        [m.embedding_id, dist(m.distance), m.seq, *([m.text or ""] if with_text else [])]
        for m in c.nearest
    ]
    return [*lines, "", f"nearest the centroid ({len(rows)}):", render_table(headers, rows)]


def _status_text(s: RunSummary) -> str:
    if s.status != "running":
        return s.status
    total = s.started.n_embeddings if s.started else "?"
    return (
        f"incomplete ({s.n_assignments} of {total} assigned; no RunCompleted or RunFailed: "
        "still being written, or its writer stopped)"
    )


def _centroids_text(d: RunDetails) -> str:
    c = d.centroids
    assert c is not None
    parts = [f"{c.k} x {c.dim}"]
    if c.objective is not None:
        parts.append(f"objective {c.objective:.6g}")
    if c.iterations is not None:
        parts.append(f"{c.iterations} iterations")
    if c.train_seconds is not None:
        parts.append(f"trained in {format_duration(c.train_seconds)}")
    return ", ".join(parts)


def _integrity_text(d: RunDetails) -> str:
    r = d.integrity
    if r is None:
        return (
            "not checked (counts, digest and sizes as RunCompleted recorded them; "
            "`runs show --verify` or `runs verify` checks the log and the read model)"
        )
    model = {
        "ok": "the read model agrees",
        "mismatch": "the read model disagrees",
        "absent": "no read model holds it",
        "unavailable": "read model not checked",
    }[r.read_model]
    if not r.ok:
        n = len(r.findings)
        return f"{n} finding{'s' if n != 1 else ''} ({model}):"
    if r.recorded_digest is not None:
        return (
            f"ok (seqs 1-{r.head} whole; assignment digest, count and cluster sizes match; {model})"
        )
    return (
        f"ok (seqs 1-{r.head} whole; no RunCompleted to check an assignment digest against; "
        f"{model})"
    )


@click.command("events")
@click.argument("run")
@click.option(
    "--after",
    type=click.IntRange(0, MAX_SEQ),
    default=0,
    metavar="SEQ",
    help="Only events after SEQ.",
)
@click.option("--limit", type=click.IntRange(0, MAX_SEQ), metavar="N", help="At most N events.")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(list(BY_NAME), case_sensitive=False),
    help="Only events of this type (repeatable).",
)
@click.option("--full", is_flag=True, help="Print centroid values instead of a summary.")
@click.option(
    "--json", "as_json", is_flag=True, help="The output is always JSON (NDJSON); accepted."
)
@click.pass_obj
def events(
    state: StoreContext,
    run: str,
    after: int,
    limit: int | None,
    types: tuple[str, ...],
    full: bool,
    as_json: bool,
) -> None:
    """A RUN's events as NDJSON, one per line, streamed (--json changes nothing)."""
    store = state.open()
    run_id = store.resolve_run(run)
    codes = audit.event_type_codes(types) if types else None
    with _stdout_pipe():
        result = audit.write_events(
            store,
            run_id,
            lambda text: click.echo(text, nl=False),
            after=after,
            limit=limit,
            types=codes,
            full=full,
        )
    if result.undecodable:
        raise click.ClickException(
            f"run {run_id}: {result.undecodable} event(s) could not be decoded (the first at "
            f'seq {result.first_undecodable}); they are printed with an "error" field'
        )


@contextmanager
def _stdout_pipe() -> Iterator[None]:
    """Stop quietly when the reader goes away (``... | head``)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise SystemExit(0) from None


@click.command("verify")
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--all", "all_runs", is_flag=True, help="Verify every run in the store.")
@output_options
@click.pass_obj
def verify(
    state: StoreContext, runs: tuple[str, ...], all_runs: bool, as_json: bool, quiet: bool
) -> None:
    """Check that runs' logs are whole and match what they recorded.

    Exit status 0 when every check holds; 1 with one line per finding, naming the run and
    the first bad sequence number.
    """
    if bool(runs) == all_runs:
        raise click.UsageError("give one or more RUN ids, or --all (not both)")
    store = state.open()
    run_ids = _resolve_all(store) if all_runs else _resolve(store, runs)
    total = sum(store.head(r) for r in run_ids)
    with progress("verifying", total, quiet=quiet or as_json) as bar:
        reports = audit.verify_runs(
            store, run_ids, read_model=READ_MODEL_CHECK, on_progress=bar.update
        )
    missing = store.missing_triggers()
    ok = all(r.ok for r in reports) and not missing
    if as_json:
        echo_json({"ok": ok, "missing_triggers": missing, "runs": [r.to_json() for r in reports]})
        if not ok:
            click.get_current_context().exit(1)
        return
    if missing:
        click.echo(
            f"{store.display_url}: the log's append-only triggers {', '.join(missing)} are "
            "missing (dropped around the store); `clusterstore init` restores them"
        )
    if not reports:
        click.echo(f"No runs to verify in {store.display_url}.")
    else:
        for report in reports:
            if report.ok:
                click.echo(f"{report.run_id}: ok ({_verified_text(report)})")
            for finding in report.findings:
                click.echo(finding.line())
    if not ok:
        click.get_current_context().exit(1)


def _verified_text(r: audit.VerifyReport) -> str:
    digest = "assignment digest matches" if r.recorded_digest is not None else "not completed"
    return f"{r.events} events, {r.n_assignments} assignments, {digest}"


def _resolve(store: EventStore, refs: tuple[str, ...]) -> list[UUID]:
    ids = [store.resolve_run(ref) for ref in refs]
    return list(dict.fromkeys(ids))


def _resolve_all(store: EventStore) -> list[UUID]:
    return [h.run_id for h in store.runs()]


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option(
    "--top",
    type=click.IntRange(0, MAX_COUNT),
    default=10,
    show_default=True,
    help="How many of the largest overlaps and of the matched pairs to show.",
)
@json_option
@quiet_option
@click.pass_obj
def compare(
    state: StoreContext, run_a: str, run_b: str, top: int, as_json: bool, quiet: bool
) -> None:
    """Compare two runs over the embedding ids they share (ARI, NMI, overlaps)."""
    store = state.open()
    a, b = store.resolve_run(run_a), store.resolve_run(run_b)
    total = store.head(a) + store.head(b)
    with progress("reading both runs", total, quiet=quiet or as_json) as bar:
        result = audit.compare_runs(store, a, b, top=top, on_progress=bar.update)
    if as_json:
        echo_json(result.to_json())
        return
    lines = [
        f"A  {a}  {_run_text(audit.summarize_run(store, a))}",
        f"B  {b}  {_run_text(audit.summarize_run(store, b))}",
        "",
        f"shared ids  {result.shared}  (only in A: {result.only_a}, only in B: {result.only_b})",
        f"ARI         {_score(result.ari)}",
        f"NMI         {_score(result.nmi)}",
        f"clusters    {result.clusters_a} in A, {result.clusters_b} in B (over the shared ids)",
    ]
    if result.noise_a or result.noise_b:
        lines.append(
            f"noise       {result.noise_a} ids in A, {result.noise_b} in B labelled -1; noise is "
            "compared as a class of its own (noise in both runs agrees)"
        )
    if result.duplicates_a or result.duplicates_b:
        lines.append(
            f"duplicates  {result.duplicates_a} ids in A, {result.duplicates_b} in B assigned "
            "more than once (the first assignment counts)"
        )
    if result.overlaps:
        rows = [
            [o.cluster_a, o.cluster_b, o.count, _percent(o.share_of_a), _percent(o.share_of_b)]
            for o in result.overlaps
        ]
        table = render_table(["cluster A", "cluster B", "shared", "of A", "of B"], rows)
        lines += ["", "largest overlaps", table]
    lines += _match_lines(result, top)
    click.echo("\n".join(lines))


def _match_lines(result: audit.Comparison, top: int) -> list[str]:
    if result.matches is None:
        return ["", "matched clusters: not computed (too many clusters for a dense table)"]
    if not result.matches:
        return []
    best = sorted(result.matches, key=lambda m: (-m.shared, m.cluster_a))
    shown = best[:top]
    rows = [[m.cluster_a, m.cluster_b, m.shared, f"{m.jaccard:.3f}"] for m in shown]
    more = len(best) - len(shown)
    return [
        "",
        f"matched clusters (one to one, Hungarian assignment): {len(best)} pairs; "
        f"{result.n_changed} of {result.shared} shared ids changed their matched cluster",
        *([render_table(["cluster A", "cluster B", "shared", "jaccard"], rows)] if rows else []),
        *(
            [f"... and {more} more pairs (a larger --top shows them; --json lists all)"]
            if more
            else []
        ),
    ]


def _run_text(s: RunSummary) -> str:
    if s.started is None:
        return f"{STATUS_LABELS[s.status]}, {s.n_assignments} assignments"
    return (
        f"{s.started.model}, {s.started.algorithm} k {s.started.k}, "
        f"{s.n_assignments} assignments, {STATUS_LABELS[s.status]}"
    )


def _score(value: float | None) -> str:
    return "n/a (no shared ids)" if value is None else f"{value:.4f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


COMMANDS: tuple[click.Command, ...] = (list_runs, show, events, verify, compare)

"""``clusterstore bench``: insert and replay throughput beside the legacy pattern and the
database's own ceiling (the measuring lives in ``benchmarks/``, imported only when the
command runs: the product imports without the harness)."""

from __future__ import annotations

from typing import Any

import click

from ._options import output_options
from ._output import echo_json, progress_enabled, render_table

# The harness's names and defaults, repeated for the options' help (a test checks they
# match ``clusterstore.benchmarks``): importing the harness is left to the command.
BACKENDS = ("sqlite", "postgres")
STEPS = (
    "legacy",
    "append",
    "ceiling",
    "ceiling_replay",
    "replay",
    "end_to_end",
    "record",
    "assign",
    "report",
    "which",
    "verify",
    "compare",
    "export_csv",
    "export_npy",
    "export_parquet",
    "runs_list",
    "runs_show",
    "verify_crowded",
    "runs_events",
    "runs_resume",
    "catch_up",
    "rebuild",
    "lookup_index",
    "projections_status",
    "datasette_metadata",
    "init",
    "demo",
    "import_legacy",
)
_AUDIT = ("verify", "compare", "export_csv", "export_npy", "export_parquet", "runs_list")
GROUPS = {
    "audit": (*_AUDIT, "runs_show"),  # the audit commands
    "isolation": ("verify", "verify_crowded"),  # verify alone and among other runs
    "runs": ("runs_list", "runs_show", "runs_events", "verify", "compare", "runs_resume"),
    "projections": ("replay", "catch_up", "rebuild", "lookup_index", "projections_status"),
    "commands": (  # at least one step for every command of the CLI
        *("end_to_end", "record", "assign", "report", "which", *_AUDIT, "runs_show"),
        *("runs_events", "runs_resume", "catch_up", "rebuild", "lookup_index"),
        *("projections_status", "datasette_metadata", "init", "demo", "import_legacy"),
    ),
}
LEGACY_CAP = 200_000
PG_ENV = "CLUSTERSTORE_BENCH_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _steps(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from clusterstore.benchmarks import runner

    known = runner.STEPS
    if value is None:
        return tuple(known)
    given = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in given if s not in known and s not in runner.GROUPS]
    if unknown or not given:
        raise click.BadParameter(
            f"unknown step {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(known)} or a group {', '.join(runner.GROUPS)}"
        )
    return tuple(dict.fromkeys(n for s in given for n in runner.GROUPS.get(s, (s,))))


def _count(name: str, default: int, help: str) -> Any:
    return click.option(
        name, type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


@click.command()
@_count(
    "--n",
    1_000_000,
    f"Assignments per step (the legacy ORM step: at most {LEGACY_CAP:,}; init and demo have "
    "sizes of their own).",
)
@click.option(
    "--backend",
    type=click.Choice([*BACKENDS, "all"]),
    default="all",
    show_default=True,
    help="Where to measure; with 'all' an unreachable PostgreSQL is reported as "
    "skipped, with 'postgres' it is an error.",
)
@_count("--repeat", 3, "Repetitions per step (median, min and max are reported).")
@click.option(
    "--steps",
    callback=_steps,
    metavar="NAME,...",
    help=f"Only these steps (default: all of {', '.join(STEPS)}); or a group: "
    + "; ".join(f"'{g}' names {', '.join(s)}" for g, s in GROUPS.items() if g != "commands")
    + "; 'commands' names a step for every command of this CLI (all but "
    + ", ".join(s for s in STEPS if s not in GROUPS["commands"])
    + ").",
)
@click.option(
    "--pg-url",
    envvar=PG_ENV,
    show_envvar=True,
    metavar="URL",
    help=f"PostgreSQL database to create scratch schemas in. Default: {PG_DEFAULT}",
)
@output_options
def bench(
    n: int,
    backend: str,
    repeat: int,
    steps: tuple[str, ...],
    pg_url: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Measure events/s, peak RSS and size on disk of the legacy ORM pattern, clusterstore's
    append, the raw-driver ceiling, replay, end to end and every command of this CLI, on
    SQLite and PostgreSQL.

    Each repetition runs in a fresh process on a fresh database (a temporary file, or a
    scratch schema dropped afterwards), alternating steps against drift."""
    from clusterstore.benchmarks.core import StepFailed
    from clusterstore.benchmarks.runner import BenchConfig, run_bench

    config = BenchConfig(
        n=n,
        backends=BACKENDS if backend == "all" else (backend,),
        repeat=repeat,
        steps=steps,
        pg_url=pg_url,
        strict_backends=backend != "all",
    )
    show = progress_enabled(quiet)

    def say(text: str, finished: bool) -> None:
        if show:
            click.echo(text, nl=finished, err=True)

    report = run_bench(config, say)
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))
    failed = [r["error"] for r in report["results"] if r["error"]]
    if failed:  # after the report: the other steps' figures are not lost
        raise StepFailed("; ".join(failed))


def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _right(rows: list[list[str]], columns: range) -> list[list[str]]:
    """Right-align the number columns, header included (the table helper left-aligns text)."""
    for i in columns:
        width = max(len(r[i]) for r in rows)
        for r in rows:
            r[i] = r[i].rjust(width)
    return rows


def _why(result: dict[str, Any]) -> str:
    if result["error"]:
        return f"FAILED: {result['error']}"
    return f"skipped: {result['skipped']}" if result["skipped"] else (result["note"] or "")


def format_report(report: dict[str, Any]) -> str:
    rows = []
    for r in report["results"]:
        rate = r["events_per_s"] or {}
        rows.append(
            [
                r["name"],
                r["backend"],
                _num(r["n_events"]),
                _num(rate.get("median")),
                _num(rate.get("min")),
                _num(rate.get("max")),
                _num((r.get("step_seconds") or {}).get("median"), 2),
                _num(r["peak_rss_mb"]),
                _num(r["db_mb"], 1),
                _why(r),
            ]
        )
    headers = [
        "step", "backend", "n", "events/s", "min", "max", "s (median)", "peak RSS MB", "DB MB",
        "note",
    ]  # fmt: skip
    head, *body = _right([headers, *rows], range(2, 9))
    lines = [render_table(head, body), ""]
    for backend, ratios in report["ratios"].items():
        shown = [f"{k.replace('_vs_', '/')} {v:.2f}x" for k, v in ratios.items() if v is not None]
        mine = [r for r in report["results"] if r["backend"] == backend]
        why = (
            "a step failed"
            if any(r["error"] for r in mine)
            else "a step was skipped"
            if any(r["skipped"] for r in mine)
            else "no two of these steps make one"
        )
        lines.append(f"{backend}: {', '.join(shown) or f'no ratio ({why})'}")
    m = report["machine"]
    lines.append(
        f"machine: {m['n_cpus']} CPUs, Python {m['python']}, SQLite {m['sqlite']}, "
        f"PostgreSQL {m['postgres'] or '-'}, load average {m['load_avg_before']} -> "
        f"{m['load_avg_after']}; repetitions per step: {report['n_repeats']}"
    )
    return "\n".join(lines)

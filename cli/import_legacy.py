"""``clusterstore import-legacy SOURCE``: move in from an SQLModel database."""

from __future__ import annotations

import click

from clusterstore.eventstore import EventStore, NoStoreError
from clusterstore.legacy import LegacySource, import_legacy, plan

from ._context import StoreContext, pass_store, warn
from ._options import output_options
from ._output import echo_json, progress, render_table
from .projections import refresh_after_write


@click.command("import-legacy")
@click.argument("source", metavar="SOURCE")
@click.option("--dry-run", is_flag=True, help="Report what would be imported; write nothing.")
@output_options
@pass_store
def import_legacy_command(
    state: StoreContext, source: str, dry_run: bool, as_json: bool, quiet: bool
) -> None:
    """Import the runs of a legacy SQLModel database (SQLite path or URL), read-only.

    Each legacy clustering result becomes a run with the same id; running it again
    imports nothing new.
    """
    with LegacySource(source) as legacy:  # first: a missing source creates no store
        store = _dry_run_store(state) if dry_run else state.open(write=True)
        todo = sum(i.rows for i in plan(legacy, store) if i.state in ("new", "partial"))
        with progress("importing", todo, quiet=quiet or dry_run or as_json) as bar:
            report = import_legacy(legacy, store, dry_run=dry_run, on_progress=bar.update)
    for message in report.warnings():
        warn(message)
    if store is not None and not dry_run:
        refresh_after_write(store, quiet=quiet or as_json)
    if as_json:
        echo_json(report.as_dict())
        return
    verb = "Would import" if dry_run else "Imported"
    new = report.imported + report.resumed
    if new == 0 and not report.changed:
        click.echo(
            f"Nothing new to import: all {len(report.items)} legacy results from "
            f"{report.source} are already in the store."
        )
        return
    rows = [
        (
            str(i.run_id),
            i.result.model,
            len(i.clusters),
            i.rows,
            "failed" if i.failure else "completed",
            i.state,
        )
        for i in report.items
    ]
    click.echo(render_table(["run_id", "model", "k", "rows", "status", "before"], rows))
    click.echo(
        f"{verb} {new} of {len(report.items)} legacy results ({report.failed_runs} as failed "
        f"runs, {report.skipped} already imported, {len(report.changed)} changed and "
        "skipped), "
        f"{report.assignments:,} assignments."
    )


def _dry_run_store(state: StoreContext) -> EventStore | None:
    """A dry run only reads: the store opened read-only, or None where there is none yet
    (every legacy result would then be imported as new)."""
    try:
        return state.open()
    except NoStoreError:
        return None

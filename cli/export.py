"""``clusterstore export``: a run's assignments as CSV, .npy or Parquet (``audit.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from clusterstore import audit
from clusterstore.audit.export import Format

from ._options import quiet_option
from ._output import progress

if TYPE_CHECKING:
    from ._context import StoreContext


@click.command("export")
@click.argument("run")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH",
    help="The file to write (replaced if it exists).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(audit.FORMATS),
    help="csv, npy or parquet. Default: from the file's extension, else csv.",
)
@quiet_option
@click.pass_obj
def export(state: StoreContext, run: str, output: str, fmt: str | None, quiet: bool) -> None:
    """Write a RUN's assignments (embedding_id, cluster, distance) in sequence order.

    Two runs that made the same assignments export to byte-identical files.
    """
    store = state.open()
    run_id = store.resolve_run(run)
    chosen: Format = fmt or _format_of(output)  # type: ignore[assignment]
    with progress("exporting", store.head(run_id), quiet=quiet) as bar:
        result = audit.export_run(store, run_id, output, format=chosen, on_progress=bar.update)
    if quiet:
        return
    summary = audit.summarize_run(store, run_id)
    if summary.status != "completed":
        click.echo(
            f"note: run {run_id} is {summary.status_label}; the export holds the assignments "
            "recorded so far",
            err=True,
        )
    click.echo(f"exported {result.rows} assignments of run {run_id} to {output} ({chosen})")


def _format_of(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in audit.FORMATS else "csv"

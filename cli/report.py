"""``clusterstore report``: one self-contained HTML file about a run (``audit.report``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from clusterstore import audit
from clusterstore.audit.report import MEMBERS

from ._interrupt import output_left, says_on_interrupt
from ._options import output_options, texts_options
from ._output import echo_json, progress

if TYPE_CHECKING:
    from ._context import StoreContext


@click.command("report")
@click.argument("run")
@click.option("--compare", "compare_to", metavar="RUN2", help="Compare with this run.")
@texts_options
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH",
    help="The HTML file to create; - writes to standard output.",
)
@click.option(
    "--members",
    type=click.IntRange(min=0, max=1000),
    default=MEMBERS,
    show_default=True,
    help="Members nearest the centroid shown per cluster.",
)
@click.option("--force", is_flag=True, help="Replace an existing regular file.")
@output_options
@click.pass_obj
def report(
    state: StoreContext,
    run: str,
    compare_to: str | None,
    texts: str | None,
    text_column: str,
    id_column: str,
    output: str,
    members: int,
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write a self-contained HTML report of RUN: its facts, cluster sizes, distances,
    the members nearest each centroid and, with --compare, the matched clusters.

    The file holds everything inline (no request to any network when opened) and follows
    the same rules as `export -o`: created, never substituted (--force replaces a regular
    file; the store's own files are refused); - writes to standard output.
    """
    if as_json and output == "-":
        raise click.UsageError("--json prints to standard output; give -o a file name")
    store = state.open()
    run_id = store.resolve_run(run)
    other = store.resolve_run(compare_to) if compare_to else None
    source = audit.TextsSource(texts, id_column, text_column) if texts else None
    total = store.head(run_id) * 2 + (store.head(other) if other else 0)
    with (
        says_on_interrupt(output_left(output)),
        progress("writing the report", total, quiet=quiet or as_json) as bar,
    ):
        result = audit.write_report(
            store,
            run_id,
            output,
            compare_to=other,
            texts=source,
            members=members,
            force=force,
            on_progress=bar.update,
        )
    for warning in result.warnings:  # printed even with --quiet
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(result.to_json())
    elif not quiet:
        click.echo(
            f"wrote the report of run {run_id} to {output} ({result.n_bytes:,} bytes, "
            f"{result.generation_s:.1f} s)",
            err=output == "-",
        )

"""``clusterstore which``: where one embedding landed in every completed run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from clusterstore import projections as pj

from ._options import json_option, output_options
from ._output import echo_json, render_table
from .projections import warn_if_behind

if TYPE_CHECKING:
    from ._context import StoreContext


@click.command("which")
@click.argument("embedding_id")
@click.option("--model", metavar="MODEL", help="Only runs of this embedding model.")
@output_options
@click.pass_obj
def which(
    state: StoreContext, embedding_id: str, model: str | None, as_json: bool, quiet: bool
) -> None:
    """The cluster, cluster_id and distance of EMBEDDING_ID in every completed run.

    Answered from the read models (`projections catch-up` brings them up to date); an
    index lookup when `projections lookup-index on`, else a scan.
    """
    store = state.open()
    result = pj.which(store, embedding_id, model=model)
    warn_if_behind(store)
    if as_json:
        echo_json(result.to_json())
        return
    if not result.built:
        click.echo("No read models yet; run `clusterstore projections catch-up`.")
        return
    if not result.placements:
        where = f" of model {model}" if model is not None else ""
        click.echo(f"Embedding {result.embedding_id} is in no completed run{where}.")
    else:
        rows = [
            [
                str(p.run_id),
                p.model or "?",
                p.cluster,
                "noise" if p.cluster_id is None else str(p.cluster_id),
                "-" if p.distance is None else f"{p.distance:.6g}",
            ]
            for p in result.placements
        ]
        click.echo(render_table(["run id", "model", "cluster", "cluster_id", "distance"], rows))
    if not result.indexed and not quiet:
        click.echo(
            "note: no lookup index, so this scanned every assignment; "
            "`clusterstore projections lookup-index on` makes it an index lookup",
            err=True,
        )


@click.command("datasette-metadata")
@click.option(
    "--database",
    metavar="NAME",
    help="Datasette's name for the database (default: the SQLite file's name without .db).",
)
@json_option
@click.pass_obj
def datasette_metadata(state: StoreContext, database: str | None, as_json: bool) -> None:
    """Print Datasette metadata JSON that hides the internal tables (cs_*, pj_*).

    The output is JSON whether or not ``--json`` is given (accepted like every command's).

    \b
        clusterstore --db runs.db datasette-metadata > metadata.json
        datasette runs.db --metadata metadata.json
    """
    echo_json(pj.datasette_metadata(state.open(), database))

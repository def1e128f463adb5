"""``clusterstore assign``: label new embeddings with a recorded run's centroids."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from clusterstore.clustering.inputs import check_inputs
from clusterstore.eventstore.runs import DEFAULT_BATCH_SIZE

from ._context import pass_store
from ._options import MAX_COUNT, output_options
from .record import print_run

if TYPE_CHECKING:
    from ._context import StoreContext


@click.command("assign")
@click.argument("run")
@click.argument("embeddings", type=click.Path(dir_okay=False))
@click.option(
    "--ids",
    "ids",
    type=click.Path(dir_okay=False),
    help="Embedding ids: .npy (16-byte UUIDs or UUID strings) or a text file, one UUID per "
    "line. Default: derived from the input digest and row number.",
)
@click.option("--npz-key", metavar="NAME", help="The array to use in a .npz input.")
@click.option("--embeddings-column", metavar="NAME", help="The list column of a .parquet input.")
@click.option("--id-column", metavar="NAME", help="The ids column of a .parquet input.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_COUNT),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Assignments per append transaction.",
)
@output_options
@pass_store
def assign_command(
    state: StoreContext,
    run: str,
    embeddings: str,
    ids: str | None,
    npz_key: str | None,
    embeddings_column: str | None,
    id_column: str | None,
    batch_size: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Label EMBEDDINGS (.npy, .npz or .parquet) with RUN's centroids (no retraining, RUN's
    metric) and record them as a new run that names RUN as its parent."""
    check_inputs(embeddings, ids)  # before the store: a missing input creates nothing
    files = {"npz_key": npz_key, "embeddings_column": embeddings_column, "id_column": id_column}
    child = state.api(write=True).assign(
        run,
        embeddings,
        ids=ids,
        batch_size=batch_size,
        **{key: value for key, value in files.items() if value is not None},
    )
    print_run(child, as_json=as_json, quiet=quiet)

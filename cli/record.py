"""``clusterstore record``: labels made by any clustering, recorded as a run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from clusterstore.clustering.files import load_ids
from clusterstore.clustering.labels_file import load_labels_file, load_npy
from clusterstore.eventstore.errors import InputError

from ._context import pass_store
from ._options import output_options
from ._output import echo_json

if TYPE_CHECKING:
    from clusterstore import Run

    from ._context import StoreContext


@click.command("record")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option(
    "--ids",
    "ids",
    type=click.Path(dir_okay=False),
    help="Embedding ids, one per label: .npy (16-byte UUIDs or UUID strings) or a text file, "
    "one UUID per line. Or --id-column of a CSV/parquet LABELS file.",
)
@click.option("--model", required=True, help="The embedding model's name.")
@click.option("--algorithm", required=True, help="What made the labels (e.g. hdbscan).")
@click.option(
    "--distances", type=click.Path(dir_okay=False), help="A .npy of one distance per label."
)
@click.option(
    "--centroids",
    type=click.Path(dir_okay=False),
    help="A .npy of k x dim centroids (then `clusterstore assign` can use the run).",
)
@click.option("--params", "params_json", metavar="JSON", help="Parameters to keep with the run.")
@click.option("--label-column", metavar="NAME", help="CSV/parquet: the labels (label, cluster).")
@click.option("--id-column", metavar="NAME", help="CSV/parquet: the ids column.")
@click.option("--distance-column", metavar="NAME", help="CSV/parquet: the distances column.")
@output_options
@pass_store
def record_command(
    state: StoreContext,
    labels: str,
    ids: str | None,
    model: str,
    algorithm: str,
    distances: str | None,
    centroids: str | None,
    params_json: str | None,
    label_column: str | None,
    id_column: str | None,
    distance_column: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Record LABELS (.npy of integers, or a .csv/.parquet column; -1 is noise) made by any
    clustering as a completed run."""
    params = _params(params_json)
    data = load_labels_file(
        labels, label_column=label_column, id_column=id_column, distance_column=distance_column
    )
    if ids is None and data.ids is None:
        raise InputError("give the ids: --ids FILE, or --id-column NAME of a CSV/parquet LABELS")
    if ids is not None and data.ids is not None:
        raise InputError("give the ids with --ids or --id-column, not both")
    n = len(data.labels) if data.labels.ndim else 0
    id_array = load_ids(ids, n, rows_of="the labels") if ids is not None else data.ids
    assert id_array is not None
    if distances is not None and data.distances is not None:
        raise InputError("give the distances with --distances or --distance-column, not both")
    run = state.api(write=True).record(
        id_array,
        data.labels,
        model=model,
        algorithm=algorithm,
        distances=data.distances if distances is None else load_npy(distances, "distances"),
        centroids=None if centroids is None else load_npy(centroids, "centroids"),
        params=params,
    )
    print_run(run, as_json=as_json, quiet=quiet)


def _params(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--params is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise InputError("--params must be a JSON object, e.g. '{\"min_cluster_size\": 5}'")
    return value


def print_run(run: Run, *, as_json: bool, quiet: bool) -> None:
    """A written run: its JSON, its id alone (``--quiet``), or a short summary."""
    if as_json:
        echo_json(run.to_json())
        return
    if quiet:
        click.echo(str(run.run_id))
        return
    sizes = sorted(run.cluster_sizes or [0])
    parent = f", assigned to run {run.parent_run_id}" if run.parent_run_id else ""
    click.echo(
        f"run {run.run_id} {run.status}\n"
        f"  {run.model}: {run.algorithm}, k={run.k}{parent}\n"
        f"  {run.n_assignments:,} assignments, {run.n_noise or 0:,} noise; cluster sizes: "
        f"min {sizes[0]:,}, max {sizes[-1]:,}\n"
        f"  assignment digest {run.assignment_digest}"
    )

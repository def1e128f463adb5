"""``clusterstore cluster``, ``clusterstore runs resume`` and ``clusterstore demo``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from clusterstore import projections
from clusterstore.audit.text import format_duration, format_size
from clusterstore.clustering import (
    ClusterResult,
    ClusterSettings,
    cluster_file,
    resume,
    run_demo,
)
from clusterstore.clustering.inputs import check_inputs
from clusterstore.clustering.kmeans import MAX_SEED
from clusterstore.clustering.runner import (
    DEFAULT_ITERATIONS,
    DEFAULT_THREADS,
    DEFAULT_TRAIN_PER_CENTROID,
)
from clusterstore.eventstore.runs import DEFAULT_BATCH_SIZE

from ._context import StoreContext, pass_store
from ._options import MAX_COUNT, output_options
from ._output import echo_json, progress
from .projections import refresh_after_write
from .runs_audit import list_runs

F = TypeVar("F", bound=Callable[..., Any])


class CliReporter:
    """Progress bars on a terminal (one per stage), warnings on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        with progress(name, total, quiet=self.quiet) as bar:
            yield bar.update

    def warn(self, message: str) -> None:
        click.echo(f"Warning: {message}", err=True)


def _positive(name: str, default: int, help: str) -> Callable[[F], F]:
    """An option taking an integer >= 1 (0 or less is a usage error, exit 2)."""
    return click.option(
        name, type=click.IntRange(1, MAX_COUNT), default=default, show_default=True, help=help
    )


@click.command("cluster")
@click.argument("embeddings", type=click.Path(dir_okay=False))
@click.option(
    "--ids",
    "ids",
    type=click.Path(dir_okay=False),
    help="Embedding ids: .npy (16-byte UUIDs or UUID strings) or a text file, one "
    "UUID per line. Default: derived from the input digest and row number.",
)
@click.option("--npz-key", metavar="NAME", help="The array to use in a .npz input.")
@click.option(
    "--embeddings-column",
    metavar="NAME",
    help="The list-of-floats column of a .parquet input (default: its only list column).",
)
@click.option(
    "--id-column",
    metavar="NAME",
    help="A column of the .parquet input holding the ids (UUID strings or 16-byte binaries).",
)
@click.option("--model", required=True, help="The embedding model's name.")
@click.option(
    "--k", "k", type=click.IntRange(1, MAX_COUNT), required=True, help="Number of clusters."
)
@click.option("--spherical", is_flag=True, help="Cosine (spherical) k-means instead of L2.")
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    help="Random seed (default: a random one, recorded in the run).",
)
@_positive("--iterations", DEFAULT_ITERATIONS, "k-means iterations.")
@_positive("--batch-size", DEFAULT_BATCH_SIZE, "Assignments per append transaction.")
@_positive("--threads", DEFAULT_THREADS, "faiss threads (labels can differ between counts).")
@_positive(
    "--train-per-centroid", DEFAULT_TRAIN_PER_CENTROID, "Training rows per cluster (sampled)."
)
@output_options
@pass_store
def cluster_command(
    state: StoreContext,
    embeddings: str,
    ids: str | None,
    npz_key: str | None,
    embeddings_column: str | None,
    id_column: str | None,
    model: str,
    k: int,
    spherical: bool,
    seed: int | None,
    iterations: int,
    batch_size: int,
    threads: int,
    train_per_centroid: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Cluster EMBEDDINGS (.npy, .npz or .parquet; N x d floats) and record every
    assignment."""
    check_inputs(embeddings, ids)  # before the store: a missing input creates nothing
    store = state.open(write=True)
    settings = ClusterSettings(
        model=model,
        k=k,
        spherical=spherical,
        seed=seed,
        iterations=iterations,
        batch_size=batch_size,
        threads=threads,
        train_per_centroid=train_per_centroid,
    )
    heard: list[projections.DeadLetter] = []  # runs the follower starts to skip
    # the read models follow the run as it is written
    with projections.alongside(store, on_damage=heard.append):
        result = cluster_file(
            store,
            embeddings,
            settings,
            ids=ids,
            npz_key=npz_key,
            embeddings_column=embeddings_column,
            id_column=id_column,
            reporter=CliReporter(quiet or as_json),
        )
    refresh_after_write(store, quiet=quiet or as_json, heard=heard, written=_stored(result))
    _print_result(result, as_json=as_json, quiet=quiet)


@click.command("resume")
@click.argument("run")
@click.option(
    "--embeddings",
    type=click.Path(dir_okay=False),
    help="The run's input, if it moved (default: the path recorded in the run).",
)
@click.option(
    "--ids", "ids", type=click.Path(dir_okay=False), help="The run's ids file, if it moved."
)
@output_options
@pass_store
def resume_command(
    state: StoreContext,
    run: str,
    embeddings: str | None,
    ids: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Continue RUN (an id or unique prefix) after a crash: append the missing assignments."""
    store = state.open(write=True)
    heard: list[projections.DeadLetter] = []
    with projections.alongside(store, on_damage=heard.append):
        result = resume(
            store, run, embeddings=embeddings, ids=ids, reporter=CliReporter(quiet or as_json)
        )
    refresh_after_write(store, quiet=quiet or as_json, heard=heard, written=_stored(result))
    _print_result(result, as_json=as_json, quiet=quiet)


@click.command("demo")
@output_options
@click.pass_context
def demo_command(ctx: click.Context, as_json: bool, quiet: bool) -> None:
    """Cluster synthetic embeddings for three models and show the runs."""
    state: StoreContext = ctx.obj
    store = state.open(write=True)
    if not quiet and not as_json:
        click.echo(f"clusterstore demo at {store.display_url}", err=True)
    results = run_demo(store, reporter=CliReporter(quiet or as_json))
    refresh_after_write(store, quiet=quiet or as_json)
    if as_json:
        echo_json({"db_url": store.display_url, "runs": [r.to_dict() for r in results]})
        return
    ctx.invoke(list_runs, status=None, model=None, as_json=False, quiet=quiet)


def _stored(result: ClusterResult) -> str:
    return f"run {result.run_id} is {result.status} and stored"


def _print_result(result: ClusterResult, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
        return
    if quiet:
        click.echo(str(result.run_id))
        return
    sizes = sorted(result.cluster_sizes)
    how = (
        f"resumed at row {result.resumed_from:,}, appended {result.n_written:,}"
        if result.resumed_from is not None
        else f"trained on {result.train_size:,} rows"
    )
    median = format_size(result.median_cluster_size, grouping=True)
    took = format_duration(result.duration_s)
    lines = [
        f"run {result.run_id} {result.status}",
        f"  {result.model}: {result.algorithm}, k={result.k}, "
        f"{result.n_embeddings:,} x {result.dim} embeddings, seed {result.seed}",
        f"  {how}; {result.n_assignments:,} assignments; took {took}",
        f"  cluster sizes: min {sizes[0]:,}, median {median}, "
        f"max {sizes[-1]:,}; empty: {_list(result.empty_clusters)}; "
        f"tiny (<{result.tiny_limit:,}): {_list(result.tiny_clusters)}",
        f"  input digest       {result.input_digest}",
        f"  assignment digest  {result.digest}",
    ]
    click.echo("\n".join(lines))


def _list(clusters: list[int]) -> str:
    if not clusters:
        return "none"
    shown = ", ".join(map(str, clusters[:10]))
    return f"{len(clusters)} ({shown}{', ...' if len(clusters) > 10 else ''})"

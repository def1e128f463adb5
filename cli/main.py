"""``clusterstore``: the group, the global ``--db`` option and the error contract.

Every command parses its options, opens the store, calls one library function and prints.
Library errors (``EventStoreError``) become ``Error: ...`` with exit code 1, converted here
in one place; click's usage errors exit with 2; Ctrl-C is one ``Error:`` line with exit
code 130 (``_interrupt``).
"""

from __future__ import annotations

from typing import Any

import click

from clusterstore.eventstore import EventStoreError, __version__
from clusterstore.eventstore.config import ENV_VAR
from clusterstore.eventstore.schema import MAX_PARTITIONS, MIN_PARTITIONS
from clusterstore.eventstore.waiting import DEFAULT_LOCK_WAIT, LOCK_WAIT_ENV, MAX_LOCK_WAIT

from ._context import StoreContext, pass_store, warn
from ._interrupt import interrupted
from ._options import json_option
from ._output import echo_json
from .assign import assign_command
from .bench import bench
from .cluster import cluster_command, demo_command, resume_command
from .export import export
from .import_legacy import import_legacy_command
from .projections import projections_group, refresh_after_write
from .record import record_command
from .report import report
from .runs_audit import COMMANDS as RUNS_AUDIT
from .which import datasette_metadata, which


class StoreGroup(click.Group):
    """A group that turns library errors into one-line ``Error: ...`` messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EventStoreError as e:
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt as e:  # a run stopped mid-write says how to resume it
            raise interrupted(e) from e


@click.group(cls=StoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="URL|PATH",
    envvar=ENV_VAR,
    show_envvar=True,
    help="SQLite file path or SQLAlchemy URL (postgresql://...). Default: ./clusterstore.db",
)
@click.option(
    "--lock-wait",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True, max=MAX_LOCK_WAIT),
    envvar=LOCK_WAIT_ENV,
    show_envvar=True,
    help="How long to wait for a lock another process holds (a writer, a projection "
    f"runner) before giving up with an error. Default: {DEFAULT_LOCK_WAIT:g}",
)
@click.version_option(__version__, prog_name="clusterstore")
@click.pass_context
def cli(ctx: click.Context, db: str | None, lock_wait: float | None) -> None:
    """An event-sourced, append-only store for clustering runs."""
    state = StoreContext(db, lock_wait)
    ctx.obj = state
    ctx.call_on_close(state.close)


@cli.command()
@click.option(
    "--allow-existing",
    is_flag=True,
    help="Add the store to a database that already holds other tables (never touched).",
)
@click.option(
    "--partitions",
    type=int,
    metavar="N",
    help=f"PostgreSQL: hash-partition the log and the read model's assignments by run into "
    f"N partitions ({MIN_PARTITIONS}..{MAX_PARTITIONS}); only when the store is created.",
)
@json_option
@pass_store
def init(state: StoreContext, allow_existing: bool, partitions: int | None, as_json: bool) -> None:
    """Create the store's tables and read-model views (safe to run again)."""
    store = state.open(write=True, allow_existing=allow_existing, partitions=partitions)
    if not store.created:  # a new store got its views when it was opened
        restored = store.restore_triggers()
        if restored:
            warn(f"restored the log's append-only triggers {', '.join(restored)}")
        for run_id in store.restore_run_rows():
            warn(f"restored the cs_runs row of run {run_id}")
        refresh_after_write(store, quiet=True)
    n = store.partitions()
    if as_json:
        echo_json({"db_url": store.display_url, "n_partitions": n})
    else:
        layout = f" (partitioned by run: {n} partitions)" if n is not None else ""
        click.echo(f"clusterstore ready at {store.display_url}{layout}")


@cli.group()
def runs() -> None:
    """Run history: list, show, events, verify, compare, resume."""


# Command modules register here.
for _command in RUNS_AUDIT:
    runs.add_command(_command)
cli.add_command(export)
cli.add_command(report)
cli.add_command(which)
cli.add_command(datasette_metadata)
cli.add_command(import_legacy_command)
cli.add_command(cluster_command)
cli.add_command(record_command)
cli.add_command(assign_command)
cli.add_command(demo_command)
runs.add_command(resume_command)
cli.add_command(bench)
cli.add_command(projections_group)


def main() -> None:
    cli(prog_name="clusterstore")

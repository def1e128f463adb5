"""``clusterstore export``: a run's assignments as CSV, .npy or Parquet (``audit.export``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from clusterstore import audit
from clusterstore.audit.export import Format
from clusterstore.audit.summary import STATUS_LABELS

from ._interrupt import output_left, says_on_interrupt
from ._options import output_options
from ._output import echo_json, progress

if TYPE_CHECKING:
    from ._context import StoreContext


@click.command("export")
@click.argument("run")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH",
    help="The file to create; - writes to standard output (needs --format csv or parquet).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(audit.FORMATS),
    help="csv, npy or parquet. Default: from the file's extension (.csv, .npy, .parquet); "
    "must agree with it.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing regular file (its permission bits are kept).",
)
@click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Export a run that is not completed (running, failed or interrupted): the "
    "assignments recorded so far, with a warning.",
)
@output_options
@click.pass_obj
def export(
    state: StoreContext,
    run: str,
    output: str,
    fmt: str | None,
    force: bool,
    allow_incomplete: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write a RUN's assignments (embedding_id, cluster, distance) in sequence order.

    Two runs that made the same assignments export to byte-identical files.

    \b
    The file is created, never substituted:
    - an existing file is refused unless --force (then replaced when the export is
      complete, keeping its permission bits);
    - a symlink is followed: the rules apply to the file it points to;
    - a directory, FIFO, device or socket is refused; - means standard output;
    - the store's own files (the SQLite database, -wal, -shm, -journal) are always refused;
    - a new file gets the umask's permissions.
    The data goes to a hidden .NAME.clusterstore-PID.tmp file beside the target, removed if
    the export fails or is interrupted (Ctrl-C, SIGTERM); one left by a killed export is
    removed by the next export into that directory.

    With --json the summary is JSON (on standard error when the data goes to standard
    output).
    """
    chosen: Format = audit.export_format(output, fmt)
    store = state.open()
    run_id = store.resolve_run(run)
    t0 = time.perf_counter()
    with (
        says_on_interrupt(output_left(output)),
        progress("exporting", store.head(run_id), quiet=quiet or as_json) as bar,
    ):
        result = audit.export_run(
            store,
            run_id,
            output,
            format=chosen,
            force=force,
            allow_incomplete=allow_incomplete,
            on_progress=bar.update,
        )
    if result.status != "completed":  # printed even with --quiet: the file is partial
        click.echo(
            f"warning: run {run_id} is not completed (status: {STATUS_LABELS[result.status]}); "
            f"the export holds the {result.rows} assignments recorded so far",
            err=True,
        )
    if as_json:
        elapsed = round(time.perf_counter() - t0, 3)
        echo_json({**result.to_json(), "elapsed_s": elapsed}, err=output == "-")
    elif not quiet:  # to stderr when the data itself goes to stdout
        click.echo(
            f"exported {result.rows} assignments of run {run_id} to {output} ({chosen})",
            err=output == "-",
        )

"""``clusterstore projections``: catch-up (and follow), rebuild, status.

A run with an event that does not decode does not stop the read models: they skip that run
from the damaged event on (``projections.dead_letter``) and go on with every other run.
catch-up, rebuild and the commands that end with a catch-up say so with one ``Warning:``
line per damaged run and **exit 0**: what they were asked to do (bring every readable run up
to date) is done, and the read models say what they skip. The finding stays visible where
integrity is judged: ``projections status`` lists the skipped runs (and ``--json``
``damaged_runs``), ``runs list``/``show`` mark the run damaged, and ``runs verify`` exits 1
naming the event. A non-zero exit here would fail every later catch-up, ``cluster`` and
follower supervisor over one run that only an operator can repair, which is the outage this
replaces.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType

import click

from clusterstore import projections as pj
from clusterstore.eventstore import EventStore, EventStoreError
from clusterstore.projections.dead_letter import REPAIR, DeadLetter, by_run

from ._context import StoreContext, pass_store
from ._interrupt import INTERRUPTED, Interrupted
from ._options import json_option, output_options
from ._output import echo_json, progress, render_table

name_argument = click.argument(
    "name", required=False, type=click.Choice(pj.NAMES), metavar="[NAME]"
)


@click.group("projections")
def projections_group() -> None:
    """Read models built from the log: catch-up, rebuild, status."""


def bring_up_to_date(
    store: EventStore,
    names: list[str] | None = None,
    *,
    quiet: bool,
    heard: list[DeadLetter] | None = None,
) -> dict[str, int]:
    """Catch the read models up with the log, with a progress bar sized by the lag. The
    store's own commands (cluster, resume, demo, import-legacy) end with this. A run the
    read models start to skip (a damaged event) is a warning, and is added to ``heard``."""
    lag = sum(s.lag for s in pj.status(store) if names is None or s.name in names)
    letters: list[DeadLetter] = []
    try:
        with progress("projecting", max(lag, 1), quiet=quiet) as bar:
            return pj.catch_up(store, names, on_progress=bar.update, on_damage=letters.append)
    finally:
        warn_damaged(letters)
        if heard is not None:
            heard += letters


def warn_damaged(letters: list[DeadLetter]) -> None:
    """One ``Warning:`` line per run the read models started to skip."""
    for run, group in by_run(letters).items():
        first = min(group, key=lambda d: d.seq)
        names = ", ".join(sorted({d.projection for d in group}))
        click.echo(
            f"Warning: run {run} is damaged at seq {first.seq} (log position "
            f"{first.position}): {first.reason}; the read models ({names}) skip the run from "
            f"there and go on with the others; {REPAIR}",
            err=True,
        )


def warn_if_behind(store: EventStore) -> None:
    """For the commands that read the read models: a ``Warning:`` line when a finished run
    is missing from them (an interrupted projection step), with the lag and the fix."""
    try:
        behind = pj.read_models_behind(store)
    except EventStoreError:  # advice only: the command has answered already
        return
    if behind is not None:
        click.echo(f"Warning: {behind.line()}", err=True)


def refresh_after_write(
    store: EventStore,
    *,
    quiet: bool,
    heard: list[DeadLetter] | None = None,
    written: str = "what this command wrote to the log is stored",
) -> None:
    """``bring_up_to_date`` at the end of a command that wrote to the log: what it wrote is
    committed whatever happens here, so a read model that cannot be updated now (a damaged
    event, a busy runner, a lost connection) is a warning, not a failed command. ``heard``:
    runs a follower alongside the write started to skip, warned about first. Ctrl-C here
    says that ``written`` is stored and how to bring the read models up to date."""
    warn_damaged(heard or [])
    try:
        bring_up_to_date(store, quiet=quiet)
    except KeyboardInterrupt as e:
        raise Interrupted(
            f"{INTERRUPTED} while the read models were brought up to date: {written}, but "
            "the read models are behind it; `clusterstore projections catch-up` brings them "
            "up to date"
        ) from e
    except EventStoreError as e:
        click.echo(
            f"Warning: the log is written, but the read models are not up to date: {e}; "
            "`clusterstore projections catch-up` retries",
            err=True,
        )


@projections_group.command("catch-up")
@name_argument
@click.option("--follow", is_flag=True, help="Keep applying new events until interrupted.")
@output_options
@pass_store
def catch_up(
    state: StoreContext, name: str | None, follow: bool, as_json: bool, quiet: bool
) -> None:
    """Apply the events appended since each projection's checkpoint.

    NAME is clusteringresult or embeddingcluster (default: both). With --follow, keep
    running and apply new events as they are appended (Ctrl-C or SIGTERM stops); --json
    does not apply to --follow.

    A run with an event that does not decode is skipped from that event on (a Warning line
    names it, `projections status` lists it) and the others are brought up to date: the exit
    code is 0. After the event is repaired, `projections rebuild` brings the run back."""
    if follow and as_json:
        raise click.UsageError("--json does not apply with --follow (it prints no result)")
    store = state.open(write=True)
    names = [name] if name else None
    if follow:
        stopping = _stop_on_signals()
        if not quiet:
            click.echo(f"following {store.display_url} (Ctrl-C to stop)", err=True)
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C stops at once
            pj.follow(store, names, stop=stopping.is_set, on_damage=lambda d: warn_damaged([d]))
        if stopping.signum == signal.SIGINT:  # SIGTERM, a supervisor's stop, exits 0
            raise Interrupted(
                f"{INTERRUPTED}: stopped following {store.display_url}; the read models keep "
                "every batch applied before it (`clusterstore projections status` shows them)"
            )
        return
    heard: list[DeadLetter] = []
    applied = bring_up_to_date(store, names, quiet=quiet or as_json, heard=heard)
    head = store.max_position()
    if as_json:
        echo_json(
            {
                "head": head,
                "projections": [{"name": p, "n_applied": n} for p, n in applied.items()],
                "damaged_runs": [d.to_json() for d in heard],
            }
        )
    elif not quiet:
        for projection, n in applied.items():
            click.echo(f"{projection}: applied {n:,} events (log head {head:,})")


@projections_group.command()
@name_argument
@output_options
@pass_store
def rebuild(state: StoreContext, name: str | None, as_json: bool, quiet: bool) -> None:
    """Replay the whole log into new tables and swap them in atomically.

    Readers keep the old read model until the new one is complete. NAME is
    clusteringresult or embeddingcluster (default: both)."""
    store = state.open(write=True)
    head = store.max_position()
    names = [name] if name else list(pj.NAMES)
    rebuilt = []
    heard: list[DeadLetter] = []
    for projection in names:
        with progress(f"rebuilding {projection}", max(head, 1), quiet=quiet or as_json) as bar:
            done = pj.rebuild(store, [projection], on_progress=bar.update, on_damage=heard.append)[
                projection
            ]
        rebuilt.append(
            {
                "name": projection,
                "generation": done.generation,
                "n_events": done.events,
                "live_s": round(done.live_seconds, 3),
                "elapsed_s": round(done.seconds, 3),
            }
        )
        if not quiet and not as_json:
            rate = f", {done.events / done.live_seconds:,.0f} events/s" if done.events else ""
            click.echo(
                f"{projection}: rebuilt generation {done.generation} from {done.events:,} "
                f"events; live after {done.live_seconds:.1f} s{rate}, done in "
                f"{done.seconds:.1f} s"
            )
    warn_damaged(heard)
    if as_json:
        echo_json(
            {"head": head, "projections": rebuilt, "damaged_runs": [d.to_json() for d in heard]}
        )


@projections_group.command("lookup-index")
@click.argument("switch", required=False, type=click.Choice(["on", "off"]))
@json_option
@pass_store
def lookup_index(state: StoreContext, switch: str | None, as_json: bool) -> None:
    """Show or switch the lookup indexes of embeddingcluster (default: off).

    With them, `clusterstore which` and SQL `... FROM embeddingcluster WHERE embedding_id = ?`
    or `WHERE id = ?` are index lookups instead of scans; they slow replay (catch-up and
    rebuild), so it is a choice. `on` rebuilds the read model with every row's id stored
    (unless it already has them) and builds the indexes; `off` drops them. Refused while
    another runner (e.g. `catch-up --follow`) updates the read model. Without on or off it
    only reads, as `projections status` does: nothing is created or changed.
    """
    store = state.open(write=switch is not None)
    if switch is not None:
        pj.set_lookup_index(store, switch == "on")
    on = pj.lookup_index_state(store)
    if as_json:
        echo_json({"lookup_index": "on" if on else "off"})
    else:
        click.echo(f"embedding-id lookup index: {'on' if on else 'off'}")


@projections_group.command()
@json_option
@pass_store
def status(state: StoreContext, as_json: bool) -> None:
    """Each projection's checkpoint, the head of the log, and the lag; the runs the read
    models skip (damaged); finished runs missing from them (an interrupted projection
    step)."""
    store = state.open()
    rows = pj.status(store)
    letters = pj.dead_letters(store)
    behind = pj.read_models_behind(store)
    if as_json:
        echo_json(
            {
                "head": rows[0].head if rows else 0,
                "projections": [
                    {
                        "name": s.name,
                        "generation": s.generation,
                        "checkpoint": s.checkpoint,
                        "head": s.head,
                        "lag": s.lag,
                        "state": s.state,
                        "updated_at": s.updated_at,
                        "runner": s.runner,
                    }
                    for s in rows
                ],
                "damaged_runs": [d.to_json() for d in letters],
                "runs_behind": [str(r) for r in behind.runs] if behind else [],
            }
        )
        return
    click.echo(
        render_table(
            ["projection", "generation", "checkpoint", "head", "lag", "state", "runner"],
            [
                [
                    s.name,
                    s.generation,
                    s.checkpoint,
                    s.head,
                    s.lag,
                    s.state.replace("_", " "),
                    s.runner or "",
                ]
                for s in rows
            ],
        )
    )
    for run, group in by_run(letters).items():
        first = min(group, key=lambda d: d.seq)
        names = ", ".join(d.projection for d in group)
        click.echo(
            f"damaged: run {run} at seq {first.seq} (log position {first.position}): "
            f"{first.reason}; skipped by {names}; {REPAIR}"
        )
    if behind is not None:
        click.echo(behind.line())


class _Stopping:
    """Set by the first SIGTERM or Ctrl-C; ``signum`` is the last signal received."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def receive(self, signum: int) -> None:
        self.signum = signum
        if self._event.is_set():
            raise KeyboardInterrupt
        self._event.set()


def _stop_on_signals() -> _Stopping:
    """SIGTERM and Ctrl-C end ``--follow`` between batches (never in the middle of a query or
    a transaction, so locks and connections are released cleanly); a second one stops at
    once."""
    stopping = _Stopping()

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.receive(signum)

    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stopping

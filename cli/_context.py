"""The state every command receives: where the store is, opened on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from clusterstore.eventstore import EventStore

if TYPE_CHECKING:
    from clusterstore import Store


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


class StoreContext:
    """Carries ``--db`` to the commands; the store is opened on first use (a store created
    then gets its read-model views at once).

    Commands that only read call ``open()``: the store must exist and is opened read-only
    (nothing is ever created or changed; a read-only medium or a SELECT-only role works).
    Commands that write call ``open(write=True)``, which creates the store on first use."""

    def __init__(self, db: str | None):
        self.db = db
        self._store: EventStore | None = None

    def open(
        self, *, write: bool = False, allow_existing: bool = False, partitions: int | None = None
    ) -> EventStore:
        if self._store is None:
            from clusterstore._store import open_event_store

            self._store = open_event_store(
                self.db,
                allow_existing=allow_existing,
                create=write,
                warn=warn,
                partitions=partitions,
            )
        return self._store

    def api(self, *, write: bool) -> Store:
        """The store as the Python API sees it (``clusterstore.Store``); warnings go to
        stderr as ``Warning: ...`` lines."""
        from clusterstore._store import Store

        return Store(self.open(write=write), warn=warn)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_store = click.make_pass_decorator(StoreContext)

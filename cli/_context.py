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
    then gets its read-model views at once)."""

    def __init__(self, db: str | None):
        self.db = db
        self._store: EventStore | None = None

    def open(self, *, allow_existing: bool = False) -> EventStore:
        if self._store is None:
            from clusterstore._store import open_event_store

            self._store = open_event_store(self.db, allow_existing=allow_existing, warn=warn)
        return self._store

    def api(self) -> Store:
        """The store as the Python API sees it (``clusterstore.Store``); warnings go to
        stderr as ``Warning: ...`` lines."""
        from clusterstore._store import Store

        return Store(self.open(), warn=warn)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_store = click.make_pass_decorator(StoreContext)

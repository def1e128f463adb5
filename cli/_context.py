"""The state every command receives: where the store is, opened on first use."""

from __future__ import annotations

import click

from clusterstore.eventstore import EventStore


class StoreContext:
    """Carries ``--db`` to the commands; the store is opened on first use."""

    def __init__(self, db: str | None):
        self.db = db
        self._store: EventStore | None = None

    def open(self, *, allow_existing: bool = False) -> EventStore:
        if self._store is None:
            self._store = EventStore.open(self.db, allow_existing=allow_existing)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_store = click.make_pass_decorator(StoreContext)

"""How a following runner waits for new events: a plain sleep on SQLite; on PostgreSQL a
``LISTEN`` on the store's notification channel that ends the wait early. Either way the
caller re-polls the log afterwards: a notification only says "look now", and one lost (a
reconnect, a full queue) only delays the runner by one poll interval."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from clusterstore.eventstore.errors import EventStoreError
from clusterstore.eventstore.store import EventStore


class SleepWaker:
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)


class ListenWaker:
    """LISTENs on its own autocommit connection; on any error it falls back to sleeping
    and listens again at the next wait."""

    def __init__(self, store: EventStore):
        self.store = store
        self.conn: Any = None

    def _listen(self) -> Any:
        from clusterstore.eventstore.postgres import NOTIFY_CHANNEL  # only with psycopg installed

        if self.conn is None:
            conn = self.store.recorder.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            try:
                conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            except Exception:
                conn.close()
                raise
            self.conn = conn
        return self.conn.connection.driver_connection

    def wait(self, seconds: float) -> None:
        try:
            raw = self._listen()
            for _ in raw.notifies(timeout=seconds, stop_after=1):
                pass
        except (Exception, EventStoreError):  # a lost connection: sleep, listen again later
            self.close()
            time.sleep(seconds)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.invalidate()
                self.conn.close()
            except Exception:
                pass
            self.conn = None


@contextmanager
def _listening(store: EventStore) -> Iterator[ListenWaker]:
    waker = ListenWaker(store)
    try:
        yield waker
    finally:
        waker.close()


@contextmanager
def _sleeping() -> Iterator[SleepWaker]:
    yield SleepWaker()


def make_waker(store: EventStore) -> AbstractContextManager[SleepWaker | ListenWaker]:
    if store.backend == "postgresql":
        return _listening(store)
    return _sleeping()

"""The event store: typed appends with an expected sequence, decoded reads, run lookup.

    with EventStore.open("runs.db") as store:
        store.append(run_id, [RunStarted(...)], expected_seq=0)
        for seq, event in store.read(run_id):
            ...

``EventStore.open`` initialises a new or empty database on first use and refuses a
database that holds other applications' tables (see ``Recorder.initialise``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple
from uuid import UUID

from .codec import PackedEvents, decode, encode
from .config import make_recorder, resolve_url
from .errors import AmbiguousRunError, RunNotFoundError
from .events import Event
from .recorder import AppendResult, Recorder, RunHead, StoredEvent


class RecordedEvent(NamedTuple):
    seq: int
    event: Event


class EventStore:
    def __init__(self, recorder: Recorder, *, created: bool = False):
        self.recorder = recorder
        self.created = created  # this open created the store's tables

    @classmethod
    def open(
        cls, db: str | os.PathLike[str] | None = None, *, allow_existing: bool = False
    ) -> EventStore:
        """Open (and on first use create) the store at ``db`` (URL or SQLite path)."""
        recorder = make_recorder(resolve_url(db))
        try:
            created = recorder.initialise(allow_existing=allow_existing)
        except BaseException:
            recorder.dispose()
            raise
        return cls(recorder, created=created)

    def close(self) -> None:
        self.recorder.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def display_url(self) -> str:
        return self.recorder.display_url

    @property
    def backend(self) -> str:
        return self.recorder.dialect_name

    def local_files(self) -> list[Path]:
        """The files on this machine that hold the store: a SQLite database and its
        ``-wal``, ``-shm`` and ``-journal`` (listed whether or not they exist); none for
        PostgreSQL. Commands that write files refuse these."""
        return self.recorder.local_files()

    # ------------------------------------------------------------------ writes

    def append(
        self,
        run_id: UUID,
        events: Sequence[Event] | PackedEvents,
        *,
        expected_seq: int | None = None,
    ) -> AppendResult:
        """Append events (or a packed batch) at ``expected_seq + 1 ...``; see
        ``Recorder.append_events`` for the idempotency and conflict rules."""
        batch = events if isinstance(events, PackedEvents) else [encode(e) for e in events]
        return self.recorder.append_events(run_id, batch, expected_seq=expected_seq)

    # ------------------------------------------------------------------ reads

    def head(self, run_id: UUID) -> int:
        return self.recorder.run_head(run_id)

    def runs(self) -> list[RunHead]:
        return self.recorder.list_runs()

    def resolve_run(self, ref: str | UUID) -> UUID:
        """A full run id or a unique prefix of one (dashes optional), like git."""
        if isinstance(ref, UUID):
            candidates = [ref] if self.recorder.run_head(ref) else []
        else:
            text = ref.strip().lower()
            if not text or any(c not in "0123456789abcdef-" for c in text):
                raise RunNotFoundError(f"{ref!r} is not a run id (hex digits, dashes allowed)")
            candidates = self.recorder.find_runs(text)
        if not candidates:
            raise RunNotFoundError(
                f"no run matches {str(ref)!r}; `clusterstore runs list` shows them"
            )
        if len(candidates) > 1:
            shown = ", ".join(str(c) for c in candidates[:3])
            raise AmbiguousRunError(
                f"run prefix {str(ref)!r} is ambiguous: it matches {shown}"
                f"{' and more' if len(candidates) > 3 else ''}; give more characters"
            )
        return candidates[0]

    def read(
        self, run_id: UUID, *, after: int = 0, until: int | None = None, limit: int | None = None
    ) -> Iterator[RecordedEvent]:
        """A run's decoded events in seq order (streamed in pages)."""
        for ev in self.recorder.read_stream(run_id, after=after, until=until, limit=limit):
            yield RecordedEvent(ev.seq, decode_stored(ev))

    def read_raw(
        self, run_id: UUID, *, after: int = 0, until: int | None = None, limit: int | None = None
    ) -> Iterator[StoredEvent]:
        return self.recorder.read_stream(run_id, after=after, until=until, limit=limit)

    def feed(self, *, after: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        """The global feed: every event after a global position, in position order."""
        return self.recorder.read_all(after=after, limit=limit)

    def max_position(self) -> int:
        return self.recorder.max_position()


def decode_stored(ev: StoredEvent) -> Event:
    return decode(ev.type, ev.version, ev.payload, run_id=ev.run_id, seq=ev.seq)

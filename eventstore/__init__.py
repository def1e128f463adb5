"""clusterstore's event log: append-only runs keyed by (run, seq), on SQLite and PostgreSQL."""

from . import codec
from .codec import AssignmentDigest, PackedEvents, RawEvent, pack_assignments, unpack_assignments
from .errors import (
    AmbiguousRunError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    EventConflictError,
    EventDecodeError,
    EventStoreError,
    ForeignDatabaseError,
    FutureEventVersionError,
    ImmutableLogError,
    IncompleteRunError,
    InputError,
    NotADatabaseError,
    OutputFileError,
    ReadOnlyDatabaseError,
    RunNotFoundError,
    SchemaError,
    UnknownEventTypeError,
)
from .events import (
    AssignmentRecorded,
    CentroidsComputed,
    Event,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from .recorder import AppendResult, Commit, Recorder, RunHead, StoredEvent
from .runs import ProgressFn
from .store import EventStore, RecordedEvent

__version__ = "0.1.0"

__all__ = [
    "AmbiguousRunError",
    "AppendResult",
    "AssignmentDigest",
    "AssignmentRecorded",
    "CentroidsComputed",
    "Commit",
    "ConcurrencyError",
    "ConfigurationError",
    "DatabaseBusyError",
    "DatabaseUnavailableError",
    "Event",
    "EventConflictError",
    "EventDecodeError",
    "EventStore",
    "EventStoreError",
    "ForeignDatabaseError",
    "FutureEventVersionError",
    "ImmutableLogError",
    "IncompleteRunError",
    "InputError",
    "NotADatabaseError",
    "OutputFileError",
    "PackedEvents",
    "ProgressFn",
    "RawEvent",
    "ReadOnlyDatabaseError",
    "RecordedEvent",
    "Recorder",
    "RunCompleted",
    "RunFailed",
    "RunHead",
    "RunNotFoundError",
    "RunResumed",
    "RunStarted",
    "SchemaError",
    "StoredEvent",
    "UnknownEventTypeError",
    "__version__",
    "codec",
    "pack_assignments",
    "unpack_assignments",
]

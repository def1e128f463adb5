"""The event types of a clustering run.

Each event is a frozen msgspec Struct. What is stored is (type code, schema version,
msgpack payload); the type code and the name are explicit class attributes, never derived
from the class name, so renaming a class never breaks the stored log.

Schema evolution rules (msgspec ``docs/schema-evolution.rst``):
- a new field gets a default and goes at the end; old code ignores fields it does not know;
- never change a field's type, a type code or a name; never reorder fields of an
  array-like Struct (``AssignmentRecorded``);
- a change that needs more than a default bumps ``VERSION`` and registers an upcaster from
  the previous version with ``@upcaster(EventType, from_version=n)`` below the event type;
  ``codec.decode`` runs the chain v(n) -> v(n+1) -> ... -> ``VERSION`` on read.
- an unknown type code or a version newer than the code is a clear error naming the run
  and seq (``UnknownEventTypeError``, ``FutureEventVersionError``), never a crash.
  ``tests/fixtures/log_v1.*`` is a log written by the first release: it must stay readable.

Layout of a run's stream (seq starts at 1):
    1            RunStarted
    2            CentroidsComputed (optional; k-means runs always have it)
    base + row   AssignmentRecorded for input row ``row`` (``base`` = head after the preamble)
    ...          RunFailed / RunResumed may interrupt; after a RunResumed the rows go on
                 at ``seq(RunResumed) + 1 + (row - from_row)``
    last         RunCompleted (count and digest of the assignments in sequence order)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec

from .digest import DigestVersion


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event. ``TYPE`` (stored code), ``NAME`` and ``VERSION`` are explicit."""

    TYPE: ClassVar[int]
    NAME: ClassVar[str]
    VERSION: ClassVar[int] = 1


class RunStarted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 1
    NAME: ClassVar[str] = "RunStarted"

    model: str
    algorithm: str
    params: dict[str, Any] = {}
    n_embeddings: int
    dim: int
    k: int
    seed: int | None = None
    input_digest: str = ""
    started_at: datetime
    input_path: str | None = None
    ids_digest: str | None = None
    train_size: int | None = None
    faiss_version: str | None = None
    threads: int | None = None
    imported_from: str | None = None
    legacy_id: UUID | None = None
    legacy_cluster_ids: list[UUID] | None = None  # imported runs: cluster index -> legacy UUID
    # a run that labelled new embeddings with another run's centroids (``assign``): that run
    parent_run_id: UUID | None = None
    has_distances: bool = True  # False: labels recorded without distances (stored as NaN)
    # how RunCompleted's digest is computed (``digest``): 1 for runs stored before version 2
    # existed (their payload has no such field); ``start_run`` writes the current version
    digest_version: DigestVersion = 1


class CentroidsComputed(Event, frozen=True, kw_only=True):
    """k x dim float32 centroids, little-endian, row-major: enough to resume without training."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "CentroidsComputed"

    k: int
    dim: int
    centroids: bytes
    objective: float | None = None
    iterations: int | None = None
    train_seconds: float | None = None


class AssignmentRecorded(Event, frozen=True, array_like=True):
    """One embedding's cluster. Array-like: the hot path encodes it with numpy (``codec``).

    ``legacy_id`` (added after the first release, at the end, with a default) keeps the row
    id of an assignment imported from a legacy ``embeddingcluster`` table. ``cluster`` is
    -1 for noise (an outlier of HDBSCAN, BERTopic, ...): encoded as msgpack int32, never as
    a uint32, so a cluster number of an older run is never read as noise (``codec``).
    """

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "AssignmentRecorded"

    embedding_id: UUID
    cluster: int
    distance: float
    legacy_id: UUID | None = None


class RunCompleted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 4
    NAME: ClassVar[str] = "RunCompleted"

    count: int
    digest: str
    finished_at: datetime
    cluster_sizes: list[int] = []  # k real clusters; noise is in no cluster
    n_noise: int = 0  # assignments labelled -1 (noise); counted in ``count`` and the digest


class RunFailed(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 5
    NAME: ClassVar[str] = "RunFailed"

    error: str
    last_seq: int
    failed_at: datetime
    error_type: str = ""


class RunResumed(Event, frozen=True, kw_only=True):
    """A resume continues the run at ``from_row``; rows go on right after this event."""

    TYPE: ClassVar[int] = 6
    NAME: ClassVar[str] = "RunResumed"

    from_row: int
    resumed_at: datetime
    input_digest: str = ""


Upcaster = Callable[[Any], Any]
# (type code, from_version) -> a function turning the decoded v(n) object (the plain dict or
# list msgpack gives) into v(n+1).
UPCASTERS: dict[tuple[int, int], Upcaster] = {}


def upcaster(event_type: type[Event], *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the upcaster of ``event_type`` from ``from_version`` to the next."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type.TYPE, from_version)
        if key in UPCASTERS:
            raise ValueError(f"{event_type.NAME} already has an upcaster from v{from_version}")
        UPCASTERS[key] = fn
        return fn

    return register


EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    CentroidsComputed,
    AssignmentRecorded,
    RunCompleted,
    RunFailed,
    RunResumed,
)
BY_CODE: dict[int, type[Event]] = {cls.TYPE: cls for cls in EVENT_TYPES}
BY_NAME: dict[str, type[Event]] = {cls.NAME: cls for cls in EVENT_TYPES}

assert len(BY_CODE) == len(EVENT_TYPES), "event type codes must be unique"
assert len(BY_NAME) == len(EVENT_TYPES), "event names must be unique"

"""A run's events as readable JSON, one object per line (NDJSON), streamed page by page.

    {"run_id": "...", "seq": 7, "type": "AssignmentRecorded", "version": 1,
     "data": {"embedding_id": "...", "cluster": 3, "distance": 0.25}}

UUIDs become strings, datetimes RFC 3339 UTC strings ending in ``Z`` (``vocabulary``),
float32 values their shortest exact decimal form, centroids a summary (shape, sha256,
range) unless ``full``. An event whose stored bytes do not decode becomes
``{"run_id", "seq", "type", "version", "error", "payload_hex"}`` and the stream goes on;
the result counts them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import CentroidsComputed, EventStore, StoredEvent
from clusterstore.eventstore.codec import ASSIGNMENT_DTYPE, labels_of
from clusterstore.eventstore.errors import EventDecodeError, InputError
from clusterstore.eventstore.events import BY_CODE, BY_NAME, AssignmentRecorded
from clusterstore.eventstore.store import decode_stored
from clusterstore.eventstore.vocabulary import timestamp

from ._log import ASSIGNMENT, PAGE_SIZE, canonical_mask, pages, uuid_texts

_ENCODER = msgspec.json.Encoder()
_ASSIGNMENT_LINE = (
    '{"run_id":"%s","seq":%d,"type":"AssignmentRecorded","version":%d,'
    '"data":{"embedding_id":"%s","cluster":%d,"distance":%s}}\n'
)


@dataclass
class EventsResult:
    lines: int = 0
    undecodable: int = 0
    first_undecodable: int | None = None  # its seq


def event_type_codes(names: Collection[str]) -> set[int]:
    """Type codes for event names (case-insensitive), e.g. ``RunStarted``."""
    lookup = {name.lower(): cls.TYPE for name, cls in BY_NAME.items()}
    codes = set()
    for name in names:
        code = lookup.get(name.lower())
        if code is None:
            raise InputError(f"unknown event type {name!r}; one of {', '.join(BY_NAME)}")
        codes.add(code)
    return codes


def write_events(
    store: EventStore,
    run_id: UUID,
    write: Callable[[str], Any],
    *,
    after: int = 0,
    limit: int | None = None,
    types: Collection[int] | None = None,
    full: bool = False,
    page_size: int = PAGE_SIZE,
) -> EventsResult:
    """Write the run's events with seq > ``after`` (only ``types``, at most ``limit``) as
    NDJSON through ``write``, one call per page: memory stays flat however long the run."""
    result = EventsResult()
    pushdown = limit if types is None else None  # a type filter is applied here
    for page in pages(store, run_id, after=after, limit=pushdown, page_size=page_size):
        chosen = page if types is None else [ev for ev in page if ev.type in types]
        if limit is not None:
            chosen = chosen[: limit - result.lines]
        if chosen:
            write(_page_text(run_id, chosen, full, result))
            result.lines += len(chosen)
        if limit is not None and result.lines >= limit:
            break
    return result


def _page_text(run_id: UUID, page: Sequence[StoredEvent], full: bool, result: EventsResult) -> str:
    parts: list[str] = []
    run = str(run_id)
    lo = 0
    n = len(page)
    while lo < n:
        if page[lo].type == ASSIGNMENT:
            hi = lo
            while hi < n and page[hi].type == ASSIGNMENT:
                hi += 1
            parts.append(_assignment_lines(run, page[lo:hi], full, result))
            lo = hi
        else:
            parts.append(_line(event_json(page[lo], full=full, result=result)))
            lo += 1
    return "".join(parts)


def _assignment_lines(
    run: str, evs: Sequence[StoredEvent], full: bool, result: EventsResult
) -> str:
    payloads = [ev.payload for ev in evs]
    data = b"".join(payloads)
    ok = canonical_mask(payloads, [ev.version for ev in evs], data)
    if not ok.all():  # rare: decode event by event, reporting the bad ones
        return "".join(_line(event_json(ev, full=full, result=result)) for ev in evs)
    rec = np.frombuffer(data, dtype=ASSIGNMENT_DTYPE)
    ids = uuid_texts(rec["embedding_id"])
    clusters = labels_of(rec).tolist()  # -1 for noise
    dists = _float_texts(rec["distance"])
    version = AssignmentRecorded.VERSION
    return "".join(
        _ASSIGNMENT_LINE % (run, ev.seq, version, ids[i], clusters[i], dists[i])
        for i, ev in enumerate(evs)
    )


def event_json(
    ev: StoredEvent, *, full: bool = False, result: EventsResult | None = None
) -> dict[str, Any]:
    """One stored event as a JSON-ready dict (see the module docstring)."""
    cls = BY_CODE.get(ev.type)
    head: dict[str, Any] = {
        "run_id": str(ev.run_id),
        "seq": ev.seq,
        "type": cls.NAME if cls else ev.type,
        "version": ev.version,
    }
    try:
        event = decode_stored(ev)
    except EventDecodeError as e:
        if result is not None:
            result.undecodable += 1
            if result.first_undecodable is None:
                result.first_undecodable = ev.seq
        return {**head, "error": e.reason, "payload_hex": ev.payload.hex()}
    if isinstance(event, AssignmentRecorded):
        data: dict[str, Any] = {
            "embedding_id": str(event.embedding_id),
            "cluster": event.cluster,
            "distance": _float_values(np.array([event.distance], dtype="<f4"))[0],
        }
        if event.legacy_id is not None:
            data["legacy_id"] = str(event.legacy_id)
    else:
        data = {  # times in the vocabulary's one format, whatever the event was given
            k: timestamp(v) if isinstance(v, datetime) else v
            for k, v in msgspec.to_builtins(event, builtin_types=(datetime,)).items()
        }
        if isinstance(event, CentroidsComputed):
            data["centroids"] = centroids_json(event, full=full)
    return {**head, "data": data}


def centroids_json(event: CentroidsComputed, *, full: bool) -> Any:
    """The k x dim values when ``full``, else shape, sha256 and value range."""
    raw = event.centroids
    summary: dict[str, Any] = {
        "shape": [event.k, event.dim],
        "dtype": "float32",
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if len(raw) != 4 * event.k * event.dim:
        return {**summary, "bytes": len(raw), "error": "size does not match k x dim"}
    if not raw:  # k x 0 or 0 x dim: no rows to list (k may be absurdly large)
        return {**summary, "bytes": 0}
    values = np.frombuffer(raw, dtype="<f4")
    if full:
        floats = _float_values(values)
        return [floats[r * event.dim : (r + 1) * event.dim] for r in range(event.k)]
    if values.size:
        summary["min"], summary["max"] = _float_values(values[[values.argmin(), values.argmax()]])
    summary["full"] = "--full prints the values"
    return summary


def _line(obj: dict[str, Any]) -> str:
    return _ENCODER.encode(obj).decode() + "\n"


def _float_values(values: npt.NDArray[Any]) -> list[float | None]:
    """float32 values as the floats whose repr is their shortest exact decimal text."""
    return [None if t == "null" else float(t) for t in _float_texts(values)]


def _float_texts(values: npt.NDArray[Any]) -> list[str]:
    """float32 values as their shortest exact decimal text; NaN and infinities as null."""
    texts: list[str] = values.astype(str).tolist()
    if not np.isfinite(values).all():
        texts = [t if np.isfinite(float(t)) else "null" for t in texts]
    return texts

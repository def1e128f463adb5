"""Encoding events to bytes and back.

One module-level msgpack Encoder (UUIDs as 16 raw bytes) and one typed Decoder per event
type. ``AssignmentRecorded`` has a fixed 29-byte canonical layout that numpy writes and
reads for whole batches at once (no Python loop per event):

    0x93 | 0xc4 0x10 <16-byte embedding id> | 0xce <uint32 BE cluster> | 0xca <float32 BE distance>

It is ordinary msgpack (a 3-element array), so msgspec decodes it like any other event.
Noise (label -1, as HDBSCAN and BERTopic write outliers) keeps the width and the layout:
its cluster is the msgpack int32 ``0xd2 ff ff ff ff`` (-1) where a cluster has ``0xce``
and a uint32, so every payload says what it holds by itself: a uint32 cluster reads as
before in any run (old logs never held the int32 marker), and msgspec decodes noise as
``cluster=-1``. ``labels_of`` gives the labels of decoded records (-1 for noise).
An assignment imported from a legacy database also keeps its legacy row id: a 4-element
array, 47 bytes, the same layout followed by ``0xc4 0x10 <16-byte legacy id>``.
Every assignment written by clusterstore uses this layout, which makes a re-sent batch
byte-identical to the original and the run digest (``digest``: over the assignment payloads
in row order) independent of how the assignments were batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import numpy as np
import numpy.typing as npt

from .digest import AssignmentDigest as AssignmentDigest  # re-exported; it lives in digest
from .errors import EventDecodeError, FutureEventVersionError, InputError, UnknownEventTypeError
from .events import BY_CODE, UPCASTERS, AssignmentRecorded, Event
from .ids import as_ids

ASSIGNMENT_WIDTH = 29
ASSIGNMENT_DTYPE = np.dtype(
    [
        ("array", "u1"),
        ("bin", "u1", (2,)),
        ("embedding_id", "V16"),
        ("uint32", "u1"),  # the cluster's msgpack marker: CLUSTER_MARKER, or NOISE_MARKER
        ("cluster", ">u4"),
        ("float32", "u1"),
        ("distance", ">f4"),
    ]
)
assert ASSIGNMENT_DTYPE.itemsize == ASSIGNMENT_WIDTH
NOISE = -1  # the label of an assignment to no cluster (an outlier)
CLUSTER_MARKER = 0xCE  # msgpack uint32: a cluster 0 .. 2**32-1
NOISE_MARKER = 0xD2  # msgpack int32: only -1 (0xffffffff) is canonical
LEGACY_ASSIGNMENT_WIDTH = 47
LEGACY_ASSIGNMENT_DTYPE = np.dtype(
    [*ASSIGNMENT_DTYPE.descr, ("legacy_bin", "u1", (2,)), ("legacy_id", "V16")]
)
assert LEGACY_ASSIGNMENT_DTYPE.itemsize == LEGACY_ASSIGNMENT_WIDTH

_ENCODER = msgspec.msgpack.Encoder(uuid_format="bytes")
_DECODERS: dict[int, msgspec.msgpack.Decoder[Any]] = {
    code: msgspec.msgpack.Decoder(cls) for code, cls in BY_CODE.items()
}
_RAW_DECODER = msgspec.msgpack.Decoder()


class RawEvent(NamedTuple):
    """An event as stored: type code, schema version and msgpack payload."""

    type: int
    version: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class PackedEvents:
    """``count`` events of one type whose payloads are ``width`` bytes each, back to back."""

    type: int
    version: int
    width: int
    data: bytes

    @property
    def count(self) -> int:
        return len(self.data) // self.width

    def payload(self, i: int) -> bytes:
        return self.data[i * self.width : (i + 1) * self.width]

    def slice(self, start: int, stop: int) -> PackedEvents:
        return PackedEvents(
            self.type, self.version, self.width, self.data[start * self.width : stop * self.width]
        )

    def raw(self) -> list[RawEvent]:
        return [RawEvent(self.type, self.version, self.payload(i)) for i in range(self.count)]


Batch = Sequence[RawEvent] | PackedEvents


def batch_len(batch: Batch) -> int:
    return batch.count if isinstance(batch, PackedEvents) else len(batch)


def batch_slice(batch: Batch, start: int, stop: int) -> Batch:
    return batch.slice(start, stop) if isinstance(batch, PackedEvents) else list(batch[start:stop])


def batch_payloads(batch: Batch) -> list[tuple[int, int, bytes]]:
    """(type, version, payload) for each event; used for the idempotency comparison."""
    if isinstance(batch, PackedEvents):
        return [(batch.type, batch.version, batch.payload(i)) for i in range(batch.count)]
    return [(e.type, e.version, e.payload) for e in batch]


def encode(event: Event) -> RawEvent:
    if isinstance(event, AssignmentRecorded):
        packed = pack_assignments(
            np.frombuffer(event.embedding_id.bytes, dtype="V16"),
            np.array([event.cluster]),
            np.array([event.distance]),
            legacy_ids=None
            if event.legacy_id is None
            else np.frombuffer(event.legacy_id.bytes, dtype="V16"),
        )
        return RawEvent(packed.type, packed.version, packed.data)
    return RawEvent(type(event).TYPE, type(event).VERSION, _ENCODER.encode(event))


def decode(
    type_code: int,
    version: int,
    payload: bytes,
    *,
    run_id: UUID | None = None,
    seq: int | None = None,
) -> Event:
    """Decode one stored event, upcasting older versions; errors name the run and seq."""
    cls = BY_CODE.get(type_code)
    if cls is None:
        raise UnknownEventTypeError(
            run_id,
            seq,
            f"unknown event type code {type_code}; this clusterstore is too old "
            "to read it (upgrade clusterstore)",
        )
    if version > cls.VERSION:
        raise FutureEventVersionError(
            run_id,
            seq,
            f"{cls.NAME} has schema version {version}, newer than this "
            f"clusterstore reads ({cls.VERSION}); upgrade clusterstore",
        )
    try:
        if version == cls.VERSION:
            return _DECODERS[type_code].decode(payload)  # type: ignore[no-any-return]
        obj = _RAW_DECODER.decode(payload)
        for v in range(version, cls.VERSION):
            upcast = UPCASTERS.get((type_code, v))
            if upcast is None:
                raise EventDecodeError(
                    run_id, seq, f"no upcaster for {cls.NAME} from version {v} to {v + 1}"
                )
            obj = upcast(obj)
        return msgspec.convert(obj, cls)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as e:
        if isinstance(e, EventDecodeError):
            raise
        raise EventDecodeError(run_id, seq, f"{cls.NAME} payload does not decode: {e}") from e


# ---------------------------------------------------------------- assignments, vectorised


def as_id_bytes(ids: npt.ArrayLike) -> npt.NDArray[np.void]:
    """Embedding ids as a 1-D array of 16-byte values: UUIDs, UUID strings, V16/S16 values or
    an (n, 16) uint8 array (``ids.as_ids``, the one normaliser)."""
    return as_ids(ids, "embedding ids")


def pack_assignments(
    embedding_ids: npt.ArrayLike,
    clusters: npt.ArrayLike,
    distances: npt.ArrayLike,
    *,
    legacy_ids: npt.ArrayLike | None = None,
) -> PackedEvents:
    """Encode n assignments into one contiguous block of canonical 29-byte payloads
    (47-byte payloads when ``legacy_ids`` are given)."""
    ids = as_id_bytes(embedding_ids)
    labels = np.asarray(clusters)
    dists = np.asarray(distances)
    n = ids.shape[0]
    if labels.shape != (n,) or dists.shape != (n,):
        raise InputError(
            f"ids, labels and distances must have the same length (got {n}, "
            f"{labels.shape}, {dists.shape})"
        )
    if n and (labels.min() < NOISE or labels.max() > 0xFFFFFFFF):
        raise InputError("cluster labels must be between 0 and 2**32-1, or -1 for noise")
    legacy = None if legacy_ids is None else as_id_bytes(legacy_ids)
    if legacy is not None and legacy.shape != (n,):
        raise InputError(f"legacy ids must have the same length as the ids ({n})")
    out = np.empty(n, dtype=ASSIGNMENT_DTYPE if legacy is None else LEGACY_ASSIGNMENT_DTYPE)
    out["array"] = 0x93
    out["bin"] = (0xC4, 0x10)
    out["embedding_id"] = ids
    out["uint32"] = CLUSTER_MARKER
    out["cluster"] = labels  # -1 wraps to 0xffffffff: the int32 -1's bytes
    if n and labels.min() < 0:
        out["uint32"][labels < 0] = NOISE_MARKER
    out["float32"] = 0xCA
    out["distance"] = dists
    if legacy is not None:
        out["array"] = 0x94
        out["legacy_bin"] = (0xC4, 0x10)
        out["legacy_id"] = legacy
    return PackedEvents(
        AssignmentRecorded.TYPE, AssignmentRecorded.VERSION, out.dtype.itemsize, out.tobytes()
    )


def layout_mask(rec: npt.NDArray[np.void], *, legacy: bool = False) -> npt.NDArray[np.bool_]:
    """Which records of a structured assignment array carry the fixed layout's msgpack
    markers (``ASSIGNMENT_DTYPE``, or ``LEGACY_ASSIGNMENT_DTYPE`` with ``legacy``)."""
    ok = (
        (rec["array"] == (0x94 if legacy else 0x93))
        & (rec["bin"][:, 0] == 0xC4)
        & (rec["bin"][:, 1] == 0x10)
        & (
            (rec["uint32"] == CLUSTER_MARKER)
            | ((rec["uint32"] == NOISE_MARKER) & (rec["cluster"] == 0xFFFFFFFF))
        )
        & (rec["float32"] == 0xCA)
    )
    if legacy:
        ok &= (rec["legacy_bin"][:, 0] == 0xC4) & (rec["legacy_bin"][:, 1] == 0x10)
    return ok  # type: ignore[no-any-return]


def unpack_assignments(data: bytes, *, legacy: bool = False) -> npt.NDArray[np.void]:
    """A block of canonical assignment payloads as a structured array (fields
    ``embedding_id``, ``cluster``, ``distance``; with ``legacy`` the 47-byte layout and a
    ``legacy_id`` field). Raises ``EventDecodeError`` if any record is not in that layout."""
    dtype = LEGACY_ASSIGNMENT_DTYPE if legacy else ASSIGNMENT_DTYPE
    if len(data) % dtype.itemsize:
        raise EventDecodeError(None, None, "assignment block is not a whole number of records")
    rec = np.frombuffer(data, dtype=dtype)
    ok = layout_mask(rec, legacy=legacy)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise EventDecodeError(None, None, f"assignment record {bad} is not in canonical layout")
    return rec


def labels_of(rec: npt.NDArray[np.void]) -> npt.NDArray[np.int64]:
    """The cluster labels of records in a fixed layout (``unpack_assignments``,
    ``ASSIGNMENT_DTYPE``), as int64: -1 (``NOISE``) where the record holds noise."""
    labels = rec["cluster"].astype(np.int64)
    noise = rec["uint32"] == NOISE_MARKER
    if noise.any():
        labels[noise] -= 1 << 32  # the int32 reading of the same bytes
    return labels


def count_labels(
    labels: npt.NDArray[np.int64], minlength: int = 0
) -> tuple[npt.NDArray[np.int64], int]:
    """(cluster sizes, noise count) of a block of labels: noise (-1) is counted apart and
    never in a cluster's size, nor in k. Every fold of a run's assignments counts with this.
    Callers check their own upper bound (k) first; a label below -1 is not counted (no
    canonical record holds one)."""
    n_noise = int(np.count_nonzero(labels == NOISE))
    real = (
        labels if n_noise == 0 and (not len(labels) or labels.min() >= 0) else labels[labels >= 0]
    )
    return np.bincount(real, minlength=minlength).astype(np.int64), n_noise


ASSIGNMENT_FIELDS = np.dtype(
    [("embedding_id", "V16"), ("cluster", "<i8"), ("distance", "<f4"), ("legacy_id", "V16")]
)


def assignments_from_payloads(payloads: Sequence[bytes]) -> npt.NDArray[np.void]:
    """Decode any list of AssignmentRecorded payloads into one structured array
    (``ASSIGNMENT_FIELDS``: ``cluster`` is int64, -1 for noise; ``legacy_id`` is 16 zero
    bytes where there is none).

    Whole blocks in either fixed layout are decoded with numpy; anything else (e.g. a
    payload written by a newer release with more fields) goes through msgspec one by one.
    """
    out = np.zeros(len(payloads), dtype=ASSIGNMENT_FIELDS)
    widths = {len(p) for p in payloads}
    if widths <= {ASSIGNMENT_WIDTH, LEGACY_ASSIGNMENT_WIDTH} and len(widths) == 1:
        legacy = widths == {LEGACY_ASSIGNMENT_WIDTH}
        try:
            rec = unpack_assignments(b"".join(payloads), legacy=legacy)
        except EventDecodeError:
            rec = None
        if rec is not None:
            for name in ("embedding_id", "distance"):
                out[name] = rec[name]
            out["cluster"] = labels_of(rec)
            if legacy:
                out["legacy_id"] = rec["legacy_id"]
            return out
    decoder = _DECODERS[AssignmentRecorded.TYPE]
    for i, payload in enumerate(payloads):
        try:
            ev = decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise EventDecodeError(None, None, f"assignment {i} does not decode: {e}") from e
        if not NOISE <= ev.cluster <= 0xFFFFFFFF:
            raise EventDecodeError(
                None, None, f"assignment {i} has cluster {ev.cluster}, not a uint32 or -1"
            )
        out[i] = (
            ev.embedding_id.bytes,
            ev.cluster,
            ev.distance,
            ev.legacy_id.bytes if ev.legacy_id else bytes(16),
        )
    return out


def is_canonical_assignment(payload: bytes) -> bool:
    return (
        len(payload) == ASSIGNMENT_WIDTH
        and payload[0] == 0x93
        and payload[1:3] == b"\xc4\x10"
        and (
            payload[19] == CLUSTER_MARKER
            or (payload[19] == NOISE_MARKER and payload[20:24] == b"\xff\xff\xff\xff")
        )
        and payload[24] == 0xCA
    )


def payloads_in_key_order(data: bytes, width: int, key: str) -> bytes:
    """The ``width``-byte payloads of ``data`` in key order, from records of a payload and
    its big-endian integer key (numpy type ``key``: ``">i4"`` a seq offset, ``">i8"`` a
    seq) in the order the database concatenated them: as delivered when the scan kept the
    order (checked), else sorted here. ``b""`` when ``data`` is not whole records."""
    record = np.dtype([("payload", f"V{width}"), ("key", key)])
    if len(data) % record.itemsize:
        return b""
    return in_key_order(np.frombuffer(data, dtype=record), "key")["payload"].tobytes()


def in_key_order(records: npt.NDArray[Any], key: str) -> npt.NDArray[Any]:
    """``records`` sorted by their field ``key``: as they are when the database's scan
    delivered them in that order (checked: one pass), else by a stable sort."""
    if (np.diff(records[key]) > 0).all():
        return records
    return records[np.argsort(records[key], kind="stable")]

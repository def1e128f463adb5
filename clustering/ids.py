"""Embedding ids: loaded from ``--ids`` or derived from the input digest and row number.

``--ids`` may be
- a ``.npy`` of 16-byte values (dtype ``V16`` or ``S16``, or an N x 16 ``uint8`` array);
- a ``.npy`` of UUID strings (``U``/``S`` dtype, 32 hex digits or the 36-character form);
- a text file with one UUID per line (blank lines are allowed only at the end).
Parsing is vectorised (no Python work per id). Ids must be unique within a run; a
duplicate is an error that names the id and both input rows (0-based).

Without ``--ids``, row ``r`` gets a deterministic UUIDv8 (RFC 9562)::

    bytes 0-5   first 6 bytes of the input digest (sha256, see ``inputs``)
    byte  6     0x80 | (digest byte 6 & 0x0f)          version 8
    byte  7     digest byte 7
    bytes 8-15  big-endian uint64 of (0x8000000000000000 | r)   variant 0b10, then r

so clustering the same file again gives the same ids, ``id.int & (2**62 - 1)`` is the row,
and inputs with different contents get different ids (60 digest bits).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError

IdArray = npt.NDArray[np.void]  # 1-D, dtype V16

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_DASHES = [8, 13, 18, 23]
_HEX_COLUMNS_36 = [i for i in range(36) if i not in _DASHES]
_TEXT_BLOCK = 1 << 20  # lines parsed per block


def derived_ids(input_digest: str, lo: int, hi: int) -> IdArray:
    """The derived ids of rows ``lo .. hi - 1`` (see the module docstring)."""
    prefix = np.frombuffer(bytes.fromhex(input_digest[:16]), dtype=np.uint8)
    out = np.empty((hi - lo, 16), dtype=np.uint8)
    out[:, :8] = prefix
    out[:, 6] = 0x80 | (prefix[6] & 0x0F)
    rows = np.arange(lo, hi, dtype=np.uint64) | np.uint64(1 << 63)
    out[:, 8:] = rows.astype(">u8").view(np.uint8).reshape(-1, 8)
    return out.view("V16").reshape(-1)


def ids_digest(ids: IdArray) -> str:
    """sha256 over the 16-byte ids in row order (recorded in RunStarted.ids_digest)."""
    return hashlib.sha256(np.ascontiguousarray(ids).view(np.uint8).data).hexdigest()


def load_array_ids(p: Path, n: int) -> IdArray:
    """The ids in a ``.npy`` file or a text file of UUIDs: exactly ``n``, valid and unique."""
    is_npy = p.suffix.lower() == ".npy"
    ids = _load_npy(p) if is_npy else _load_text(p)
    if ids.shape[0] != n:
        raise InputError(f"{p.name} holds {ids.shape[0]} ids but the embeddings have {n} rows")
    check_unique(ids, p.name, text_lines=not is_npy)
    return ids


def as_ids(values: npt.ArrayLike, label: str = "ids") -> IdArray:
    """Ids from an array: 16-byte values, an N x 16 uint8 array, UUID strings or UUIDs."""
    arr = np.asarray(values)
    if arr.dtype == object:
        try:
            arr = np.array([u if isinstance(u, str) else str(UUID(bytes=u.bytes)) for u in arr])
        except AttributeError as e:
            raise InputError(f"{label}: ids must be UUIDs, 16-byte values or UUID strings") from e
    if arr.dtype.kind in "VS" and arr.dtype.itemsize == 16 and arr.ndim == 1:
        return np.ascontiguousarray(arr).view("V16").reshape(-1)
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == 16:
        return np.ascontiguousarray(arr).view("V16").reshape(-1)
    if arr.dtype.kind in "US" and arr.ndim == 1:
        if arr.dtype.kind == "U":
            try:
                arr = arr.astype("S")
            except UnicodeEncodeError as e:
                bad = next(i for i, s in enumerate(arr.tolist()) if not s.isascii())
                raise InputError(f"{label} row {bad}: {str(arr[bad])!r} is not a UUID") from e
        return parse_uuid_text(arr, label)
    shape = "x".join(map(str, arr.shape))
    raise InputError(
        f"{label} holds a {shape} array of {arr.dtype}; ids must be 16-byte UUIDs (dtype V16 "
        "or N x 16 uint8) or UUID strings"
    )


def parse_uuid_text(
    texts: npt.NDArray[np.bytes_], label: str, *, first: int = 0, unit: str = "row"
) -> IdArray:
    """Parse ASCII UUIDs (32 hex digits, or 8-4-4-4-12 with dashes; any case; surrounding
    whitespace ignored) without a Python loop. Errors name ``unit first + i``."""
    t = np.char.strip(texts)
    n = t.shape[0]
    lengths = np.char.str_len(t)
    b = np.ascontiguousarray(t.astype("S36")).view(np.uint8).reshape(n, 36)
    long = lengths == 36
    digits = np.where(long[:, None], b[:, _HEX_COLUMNS_36], b[:, :32])
    nibbles = _HEX[digits]
    ok = ((lengths == 32) | (long & (b[:, _DASHES] == ord("-")).all(axis=1))) & (
        nibbles != 255
    ).all(axis=1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        shown = t[bad].decode("ascii", "replace")
        what = "is empty" if not shown else f"{shown[:60]!r} is not a UUID"
        raise InputError(f"{label} {unit} {first + bad}: {what}")
    out = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(out).view("V16").reshape(-1)


def check_unique(ids: IdArray, label: str, *, text_lines: bool = False) -> None:
    """Raise ``InputError`` naming the first repeated id (in input order) and the rows of its
    first two occurrences; ``text_lines`` adds the 1-based line numbers."""
    n = ids.shape[0]
    if n < 2:
        return
    halves = np.ascontiguousarray(ids).view(">u8").reshape(n, 2).astype(np.uint64)
    order = np.lexsort((halves[:, 1], halves[:, 0]))  # stable: equal ids in row order
    s = halves[order]
    same = np.flatnonzero((s[1:] == s[:-1]).all(axis=1))
    if same.size == 0:
        return
    second = int(order[same + 1].min())  # the first row that repeats an earlier id
    first = int(np.flatnonzero((halves == halves[second]).all(axis=1))[0])
    uid = UUID(bytes=bytes(ids[second]))
    where = f" (lines {first + 1} and {second + 1})" if text_lines else ""
    raise InputError(
        f"duplicate embedding id {uid} at rows {first} and {second} of {label}{where}; "
        "ids must be unique within a run"
    )


def _load_npy(path: Path) -> IdArray:
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(
                f"{path.name} holds Python objects; save the ids as 16-byte values or as "
                "strings (np.array(ids, dtype='U36'))"
            ) from e
        raise InputError(f"{path.name} is not a readable .npy array ({e})") from e
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e
    return as_ids(arr, path.name)


def _load_text(path: Path) -> IdArray:
    blocks: list[IdArray] = []
    blank_at: int | None = None  # 1-based line of the first blank line seen
    line = 1
    try:
        with path.open("rb") as f:
            while lines := f.readlines(_TEXT_BLOCK * 40):
                arr = np.array([s.strip() for s in lines], dtype="S")
                blank = np.flatnonzero(np.char.str_len(arr) == 0)
                if blank_at is not None and blank.size < arr.shape[0]:
                    raise InputError(f"{path.name} line {blank_at}: is empty")
                if blank.size:
                    if blank_at is None:
                        blank_at = line + int(blank[0])
                    if blank.size != arr.shape[0] - int(blank[0]):
                        raise InputError(f"{path.name} line {blank_at}: is empty")
                    arr = arr[: int(blank[0])]
                if arr.shape[0]:
                    blocks.append(parse_uuid_text(arr, path.name, first=line, unit="line"))
                line += len(lines)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e
    if not blocks:
        return np.empty(0, dtype="V16")
    return np.concatenate(blocks)

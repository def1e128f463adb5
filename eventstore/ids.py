"""Embedding ids in every accepted form, normalised to one: a 1-D array of 16-byte values.

The one normaliser (``as_ids``) behind ``RunWriter.record``, ``clustering``'s ``--ids`` and
the Python API. Accepted, for n ids:
- ``uuid.UUID`` objects (a list, or an object array; strings and 16-byte ``bytes`` may be
  mixed in);
- UUID strings: 32 hex digits or the 36-character form with dashes, any case, surrounding
  whitespace ignored (``U``/``S`` arrays or a list of ``str``);
- 16-byte values: dtype ``V16`` or ``S16``, or an n x 16 ``uint8`` array.
Parsing strings is vectorised (no Python work per id); a bad one is named by its row.
``check_unique`` names a repeated id and both rows.
"""

from __future__ import annotations

from uuid import UUID

import numpy as np
import numpy.typing as npt

from .errors import InputError

IdArray = npt.NDArray[np.void]  # 1-D, dtype V16

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_DASHES = [8, 13, 18, 23]
_HEX_COLUMNS_36 = [i for i in range(36) if i not in _DASHES]


def as_ids(values: npt.ArrayLike, label: str = "ids") -> IdArray:
    """Ids as a 1-D ``V16`` array (see the module docstring); ``label`` names the input in
    error messages."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.dtype.kind in "VS" and arr.dtype.itemsize == 16 and arr.ndim == 1:
        return np.ascontiguousarray(arr).view("V16").reshape(-1)
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == 16:
        return np.ascontiguousarray(arr).view("V16").reshape(-1)
    if arr.ndim == 1 and arr.size == 0:
        return np.empty(0, dtype="V16")
    if arr.dtype == object and arr.ndim == 1:
        return _from_objects(arr, label)
    if arr.dtype.kind in "US" and arr.ndim == 1:
        if arr.dtype.kind == "U":
            try:
                arr = arr.astype("S")
            except UnicodeEncodeError as e:
                bad = next(i for i, s in enumerate(arr.tolist()) if not s.isascii())
                raise InputError(f"{label} row {bad}: {str(arr[bad])!r} is not a UUID") from e
        return parse_uuid_text(arr, label)
    shape = "x".join(map(str, arr.shape)) or "scalar"
    raise InputError(
        f"{label} holds a {shape} array of {arr.dtype}; ids must be 16-byte UUIDs (dtype V16 "
        "or N x 16 uint8) or UUID strings"
    )


def _from_objects(arr: npt.NDArray[np.object_], label: str) -> IdArray:
    """UUID objects (the fast case), or a mix of UUIDs, strings and 16-byte ``bytes``."""
    items = arr.tolist()
    if all(type(u) is UUID for u in items):
        return np.frombuffer(b"".join(u.bytes for u in items), dtype="V16").copy()
    out = bytearray()
    for row, u in enumerate(items):
        if isinstance(u, UUID):
            out += u.bytes
        elif isinstance(u, bytes) and len(u) == 16:
            out += u
        elif isinstance(u, str):
            parsed = parse_uuid_text(np.array([u.encode("ascii", "replace")]), label, first=row)
            out += parsed.tobytes()
        else:
            raise InputError(
                f"{label} row {row}: {u!r} ({type(u).__name__}) is not a UUID, a UUID string "
                "or 16 bytes"
            )
    return np.frombuffer(bytes(out), dtype="V16").copy()


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

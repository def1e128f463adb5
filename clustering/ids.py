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

import numpy as np

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.ids import IdArray, as_ids, check_unique, parse_uuid_text

__all__ = [
    "IdArray",
    "as_ids",
    "check_unique",
    "derived_ids",
    "ids_digest",
    "load_array_ids",
    "parse_uuid_text",
]

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


def load_array_ids(p: Path, n: int, *, rows_of: str = "the embeddings") -> IdArray:
    """The ids in a ``.npy`` file or a text file of UUIDs: exactly ``n`` (one per row of
    ``rows_of``), valid and unique."""
    is_npy = p.suffix.lower() == ".npy"
    ids = _load_npy(p) if is_npy else _load_text(p)
    if ids.shape[0] != n:
        raise InputError(f"{p.name} holds {ids.shape[0]} ids but {rows_of} have {n} rows")
    check_unique(ids, p.name, text_lines=not is_npy)
    return ids


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

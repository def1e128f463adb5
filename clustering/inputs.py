"""Embedding inputs: ``.npy`` and ``.npz`` files (or in-memory arrays), read in row chunks.

A file is never loaded whole. Rows are read with positioned reads into one reused buffer
per pass (not a memory map: the pages of a map that a pass touches count toward the
process's resident memory, up to the whole file), so a 10M x 1024 input costs the buffer,
not 40 GB of RSS. ``.npz`` members are streamed through ``zipfile`` (stored or deflated).

The input digest is the sha256 of the array's ``.npy`` serialisation as stored:
- a ``.npy`` file: ``sha256sum file.npy`` (for a file that holds nothing after the array);
- a ``.npz``: the digest of its member ``NAME.npy`` (``unzip -p x.npz NAME.npy | sha256sum``);
- an in-memory array: the digest of what ``np.save(f, np.ascontiguousarray(x))`` writes.
It is computed in the same streamed pass that checks every value (``scan``), before
anything is written.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.runs import ProgressFn

FLOAT_KINDS = ("float16", "float32", "float64")
CHUNK_BYTES = 64 * 1024 * 1024  # 128 MiB before the checking pass overlapped assignment
MIN_CHUNK_ROWS = 65_536
MAX_CHUNK_ROWS = 262_144
# faiss computes squared distances in float32 (largest finite value FLOAT32_MAX, ~3.4e38,
# the square of ~1.8e19 = 2^64). The squared distance between a row and a centroid can
# reach (|x| + |c|)^2, and a k-means centroid is a mean of rows (|c| <= the largest |x|),
# so 4x the largest squared norm: rows of norm 2^63 or more overflow to infinity, and
# faiss then labels the row -1 or aborts the whole process. 2^62 leaves a 4x margin for
# float32 rounding in the sums.
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_ROW_NORM = 2.0**62
DISTANCE_NORM_LIMIT = 2.0**63  # |row| + |centroid| must stay below this

F32Array = npt.NDArray[np.float32]


def input_file(path: str | Path) -> Path:
    """``path``, which must be a regular file: an input is read more than once (checked,
    then assigned; again by ``runs resume``), which a pipe cannot be."""
    p = Path(path)
    if not p.is_file():
        if not p.exists():
            raise InputError(f"{p}: no such file")
        raise InputError(
            f"{p} is not a regular file (a pipe, socket or device); save the data to a file "
            "and give its path"
        )
    return p


def check_inputs(*paths: str | Path | None) -> None:
    """Each given path is a regular file (``input_file``): checked before a command opens
    its store, so a missing input creates nothing."""
    for path in paths:
        if path is not None:
            input_file(path)


class _Stream(Protocol):
    """A binary file (``FileIO``) or a zip member (``ZipExtFile``)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


def default_chunk_rows(dim: int) -> int:
    """Rows per chunk: ~64 MiB of float32, kept within 64k-256k rows (multiple of 1024)."""
    rows = CHUNK_BYTES // (4 * max(dim, 1))
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, rows // 1024 * 1024))


class EmbeddingSource:
    """An N x d floating-point array that can be read a chunk of rows at a time."""

    label: str  # how error messages name the input
    random_access: bool = False  # whether single rows read cheaply (``read_rows``)
    path: Path | None
    npz_key: str | None
    n: int
    dim: int
    dtype: np.dtype[np.floating]

    def __init__(self, label: str, n: int, dim: int, dtype: np.dtype[np.floating]):
        self.label = label
        self.path = None
        self.npz_key = None
        self.n = n
        self.dim = dim
        self.dtype = dtype

    @property
    def row_bytes(self) -> int:
        return self.dim * self.dtype.itemsize

    def header(self) -> bytes:
        """The ``.npy`` header bytes that precede the data (part of the digest)."""
        raise NotImplementedError

    @contextmanager
    def reader(self) -> Iterator[Callable[[int, npt.NDArray[np.floating]], None]]:
        """A function ``read(lo, out)`` filling ``out`` (m x d, source dtype) with rows
        ``lo .. lo + m - 1``; reads are fastest in increasing row order."""
        raise NotImplementedError
        yield

    def chunks(
        self, start: int = 0, *, chunk_rows: int
    ) -> Iterator[tuple[int, F32Array, npt.NDArray[np.floating]]]:
        """(lo, float32 rows, raw rows) for chunks ``[lo, lo + chunk_rows)`` aligned to
        multiples of ``chunk_rows`` (the first one starts at ``start``'s chunk). The arrays
        are views of reused buffers, valid until the next chunk."""
        m = max(1, min(chunk_rows, self.n))
        raw = np.empty((m, self.dim), dtype=self.dtype)
        same = self.dtype == np.dtype("<f4") or self.dtype == np.dtype("=f4")
        f32 = raw if same else np.empty((m, self.dim), dtype=np.float32)
        with self.reader() as read:
            for lo in range(start // chunk_rows * chunk_rows, self.n, chunk_rows):
                hi = min(self.n, lo + chunk_rows)
                read(lo, raw[: hi - lo])
                if not same:
                    with np.errstate(over="ignore"):
                        np.copyto(f32[: hi - lo], raw[: hi - lo], casting="same_kind")
                yield lo, f32[: hi - lo], raw[: hi - lo]  # type: ignore[misc]


def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered array of this dtype and shape."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


class ArraySource(EmbeddingSource):
    """An in-memory (or memory-mapped) numpy array."""

    random_access = True

    def __init__(self, array: npt.ArrayLike, label: str = "embeddings"):
        arr = np.asarray(array)
        _check_layout(label, arr.dtype, arr.shape, fortran_order=False)
        super().__init__(label, arr.shape[0], arr.shape[1], arr.dtype)
        self.array = arr

    def header(self) -> bytes:
        """The header ``np.save(path, np.ascontiguousarray(array))`` writes."""
        return npy_header(self.dtype, self.array.shape)

    @contextmanager
    def reader(self) -> Iterator[Callable[[int, npt.NDArray[np.floating]], None]]:
        def read(lo: int, out: npt.NDArray[np.floating]) -> None:
            out[...] = self.array[lo : lo + out.shape[0]]

        yield read


class NpyStreamSource(EmbeddingSource):
    """A ``.npy`` file, or the ``NAME.npy`` member of a ``.npz`` archive."""

    def __init__(self, path: Path, npz_key: str | None = None):
        self.file_path = path
        self.member = None if npz_key is None else f"{npz_key}.npy"
        label = path.name if npz_key is None else f"{path.name}[{npz_key}]"
        with self._open() as (f, size):
            shape, fortran, dtype, offset = _read_npy_header(label, f)
        _check_layout(label, dtype, shape, fortran_order=fortran)
        super().__init__(label, shape[0], shape[1], dtype)
        self.path = path
        self.npz_key = npz_key
        self.random_access = npz_key is None  # a zip member is read forward only
        self.offset = offset
        expected = offset + self.n * self.row_bytes
        if size < expected:
            raise InputError(
                f"{label} is truncated: {size} bytes, but its header promises {expected}"
            )

    @contextmanager
    def _open(self) -> Iterator[tuple[_Stream, int]]:
        try:
            if self.member is None:
                with self.file_path.open("rb", buffering=0) as f:
                    yield f, self.file_path.stat().st_size  # type: ignore[misc]
            else:
                with zipfile.ZipFile(self.file_path) as z, z.open(self.member) as m:
                    yield m, z.getinfo(self.member).file_size  # type: ignore[misc]
        except OSError as e:
            raise InputError(f"cannot read {self.file_path}: {e.strerror or e}") from e
        except (zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"cannot read {self.file_path}: {e}") from e

    def header(self) -> bytes:
        with self._open() as (f, _):
            return _read_exact(self.label, f, self.offset)

    @contextmanager
    def reader(self) -> Iterator[Callable[[int, npt.NDArray[np.floating]], None]]:
        with self._open() as (f, _):

            def read(lo: int, out: npt.NDArray[np.floating]) -> None:
                pos = self.offset + lo * self.row_bytes
                if f.tell() != pos:
                    f.seek(pos)
                _read_into(self.label, f, out.reshape(-1).view(np.uint8).data)

            yield read


def _read_npy_header(
    label: str, f: _Stream
) -> tuple[tuple[int, ...], bool, np.dtype[np.floating], int]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, EOFError, SyntaxError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{label} is not a readable .npy array ({first})") from e
    return shape, fortran, dtype, f.tell()


def _check_layout(
    label: str, dtype: np.dtype, shape: tuple[int, ...], *, fortran_order: bool
) -> None:
    if dtype.name not in FLOAT_KINDS:
        raise InputError(
            f"{label} holds {dtype.name} values; embeddings must be float16, float32 or float64"
        )
    if len(shape) != 2:
        raise InputError(
            f"{label} has shape {tuple(shape)}; embeddings must be a 2-D array (N x d)"
        )
    if shape[0] == 0:
        raise InputError(f"{label} holds no embeddings (0 rows)")
    if shape[1] == 0:
        raise InputError(f"{label} has dimension 0; embeddings need at least one column")
    if fortran_order and shape[0] > 1 and shape[1] > 1:
        raise InputError(
            f"{label} is stored column-major (Fortran order); save it row-major with "
            "np.save(path, np.ascontiguousarray(x))"
        )


def _read_into(label: str, f: _Stream, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise InputError(f"{label} ended early; the file is truncated")
        got += n


def _read_exact(label: str, f: _Stream, size: int) -> bytes:
    buf = bytearray(size)
    _read_into(label, f, memoryview(buf))
    return bytes(buf)


# ---------------------------------------------------------------- the checking pass


@dataclass
class ScanResult:
    digest: str
    sample: F32Array | None  # the training rows, float32 (normalised when spherical)


def scan(
    source: EmbeddingSource,
    *,
    chunk_rows: int,
    sample_rows: npt.NDArray[np.int64] | None = None,
    spherical: bool = False,
    on_rows: ProgressFn | None = None,
    max_norm: float = MAX_ROW_NORM,
) -> ScanResult:
    """One streamed pass over every row: the input digest, a check that every value is
    finite as float32 and every row's norm below ``max_norm`` (``check_magnitudes``; and,
    for spherical k-means, that no row is all zeros), and a copy of the rows in
    ``sample_rows`` (sorted). Raises ``InputError`` naming the first bad row."""
    h = hashlib.sha256(source.header())
    sample = None
    if sample_rows is not None:
        sample = np.empty((sample_rows.shape[0], source.dim), dtype=np.float32)
    taken = 0
    for lo, x, raw in source.chunks(0, chunk_rows=chunk_rows):
        h.update(raw.reshape(-1).view(np.uint8).data)
        _check_values(source, lo, x, raw, spherical, max_norm)
        if sample is not None and sample_rows is not None:
            end = int(np.searchsorted(sample_rows, lo + x.shape[0]))
            sample[taken:end] = x[sample_rows[taken:end] - lo]
            taken = end
        if on_rows is not None:
            on_rows(x.shape[0])
    if sample is not None and spherical:
        from .kmeans import normalize_rows

        normalize_rows(sample)
    return ScanResult(h.hexdigest(), sample)


def read_rows(
    source: EmbeddingSource, rows: npt.NDArray[np.int64], *, spherical: bool = False
) -> F32Array | None:
    """The rows ``rows`` (sorted) of a ``random_access`` source as float32 (normalised when
    spherical), one positioned read each: the values ``scan`` copies out as its sample; None
    if any of them fails the checks ``scan`` makes (``scan`` then names the first bad row)."""
    raw = np.empty((rows.shape[0], source.dim), dtype=source.dtype)
    with source.reader() as read:
        for i, row in enumerate(rows.tolist()):
            read(row, raw[i : i + 1])
    x = raw if raw.dtype == np.dtype("<f4") or raw.dtype == np.dtype("=f4") else None
    if x is None:
        x = np.empty(raw.shape, dtype=np.float32)
        with np.errstate(over="ignore"):
            np.copyto(x, raw, casting="same_kind")
    try:
        _check_values(source, 0, x, raw, spherical)
    except InputError:
        return None
    if spherical:
        from .kmeans import normalize_rows

        normalize_rows(x)
    return x  # type: ignore[return-value]


def _check_values(
    source: EmbeddingSource,
    lo: int,
    x: F32Array,
    raw: npt.NDArray[np.floating],
    spherical: bool,
    max_norm: float = MAX_ROW_NORM,
) -> None:
    if not _rows_within(x, max_norm):  # one fast pass; NaN, infinity and huge rows fail it
        _refuse_non_finite(source, lo, x, raw)
        check_magnitudes(source.label, lo, x, max_norm)
    if spherical:
        zero = ~x.any(axis=1)
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise InputError(
                f"{source.label} row {lo + row} is all zeros; spherical (cosine) k-means "
                "cannot normalise it"
            )


def _rows_within(x: F32Array, max_norm: float) -> bool:
    """True if every row is finite with a norm below ``max_norm`` (a NaN or an infinity
    makes its squared norm NaN or infinite, and the maximum with it)."""
    if x.shape[0] == 0:
        return True
    squared = np.einsum("ij,ij->i", x, x)  # float32; overflows to inf beyond ~1.8e19
    return bool(squared.max() < max_norm * max_norm)


def check_magnitudes(label: str, lo: int, x: F32Array, max_norm: float = MAX_ROW_NORM) -> None:
    """Refuse (``InputError``, naming the first row) a chunk of finite float32 rows, the
    first being row ``lo``, where a row's Euclidean norm reaches ``max_norm``: faiss's
    float32 squared distances would overflow (see ``MAX_ROW_NORM``), and it would label the
    row -1 or abort the process. Callable on any chunk, in any order."""
    if _rows_within(x, max_norm):
        return
    step = 8192
    for s in range(0, x.shape[0], step):
        block = x[s : s + step].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = np.flatnonzero(~(norms < max_norm))
        if bad.size:
            row = int(bad[0])
            raise InputError(
                f"{label} row {lo + s + row} has a norm of {norms[row]:.3g}; faiss computes "
                f"squared distances in float32 (at most {FLOAT32_MAX:.3g}), so every row's "
                f"Euclidean norm must be below {max_norm:.3g} (a distance can reach 4x the "
                "largest squared norm); scale the embeddings down"
            )


def _refuse_non_finite(
    source: EmbeddingSource, lo: int, x: F32Array, raw: npt.NDArray[np.floating]
) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        values = x[row][~finite[row]]
        if np.isnan(values).any():
            what = "NaN"
        elif np.isfinite(raw[row]).all():
            what = "a value outside the float32 range"
        else:
            what = "infinity"
        raise InputError(
            f"{source.label} row {lo + row} contains {what}; embeddings must be finite"
        )

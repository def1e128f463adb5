"""Parquet inputs: embeddings in a list column, ids in another, read one row group at a time.

The embeddings column is a ``fixed_size_list<float>`` or a ``list<float>`` (every row of
the same length, none null); float16, float32 and float64 are taken as they are. Only the
row group being read is in memory, so a 10M-row file streams like a ``.npy``. The input
digest is that of the same values saved as a ``.npy`` (``np.save`` of the N x d array), so
a parquet file and the ``.npy`` with the same numbers are the same input.

The ids column holds UUID strings, or 16-byte binaries (``binary`` or
``fixed_size_binary(16)``).

pyarrow is an optional extra: ``pip install 'clusterstore[parquet]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import ConfigurationError, InputError

from .ids import IdArray, as_ids, check_unique
from .inputs import EmbeddingSource, npy_header

FLOAT_TYPES = {"halffloat": "<f2", "float": "<f4", "double": "<f8"}


def _pq() -> ModuleType:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ConfigurationError(
            "reading .parquet files needs pyarrow: pip install 'clusterstore[parquet]'"
        ) from e
    return pq


def _open(path: Path) -> Any:
    pq = _pq()
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a bad file
        raise InputError(f"{path.name} is not a readable parquet file: {e}") from e


def _list_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    return [
        f.name
        for f in schema
        if pa.types.is_fixed_size_list(f.type)
        or pa.types.is_list(f.type)
        or pa.types.is_large_list(f.type)
    ]


class ParquetSource(EmbeddingSource):
    """The embeddings column of a ``.parquet`` file."""

    def __init__(self, path: Path, column: str | None):
        pf = _open(path)  # first: without pyarrow, the error that names the extra
        import pyarrow as pa

        schema = pf.schema_arrow
        if column is None:
            candidates = _list_columns(schema)
            if len(candidates) != 1:
                found = ", ".join(candidates) or "none"
                raise InputError(
                    f"{path.name}: name the embeddings column with --embeddings-column "
                    f"(list columns: {found})"
                )
            column = candidates[0]
        if column not in schema.names:
            raise InputError(
                f"{path.name} has no column {column!r} (columns: {', '.join(schema.names)})"
            )
        kind = schema.field(column).type
        label = f"{path.name}:{column}"
        if not (
            pa.types.is_fixed_size_list(kind)
            or pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
        ):
            raise InputError(f"{label} is {kind}, not a list of floats (one embedding per row)")
        dtype = FLOAT_TYPES.get(str(kind.value_type))
        if dtype is None:
            raise InputError(
                f"{label} holds {kind.value_type} values; embeddings must be "
                "float16, float32 or float64"
            )
        self._file = pf
        self.column = column
        self._sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        n = int(sum(self._sizes))
        if pa.types.is_fixed_size_list(kind):
            dim = kind.list_size
        else:
            dim = self._first_length(label) if n else 0
        if n == 0 or dim == 0:
            raise InputError(f"{label} holds no embeddings")
        super().__init__(label, n, dim, np.dtype(dtype))
        self.path = path

    def _first_length(self, label: str) -> int:
        for i, size in enumerate(self._sizes):
            if size:
                first = self._file.read_row_group(i, columns=[self.column]).column(0)[0]
                if not first.is_valid:
                    raise InputError(f"{label}: row 0 is null")
                return len(first)
        return 0

    def header(self) -> bytes:
        return npy_header(self.dtype, (self.n, self.dim))

    def _group(self, i: int, first_row: int) -> npt.NDArray[np.floating]:
        """Row group ``i`` as an (rows, dim) array, checked: no nulls, every row ``dim`` long."""
        column = self._file.read_row_group(i, columns=[self.column]).column(0)
        parts = []
        row = first_row
        for chunk in column.chunks:
            if chunk.null_count:
                bad = row + next(j for j in range(len(chunk)) if not chunk[j].is_valid)
                raise InputError(f"{self.label}: row {bad} is null")
            if hasattr(chunk, "offsets"):
                lengths = np.diff(chunk.offsets.to_numpy())
                wrong = np.flatnonzero(lengths != self.dim)
                if wrong.size:
                    j = int(wrong[0])
                    raise InputError(
                        f"{self.label}: row {row + j} has {int(lengths[j])} "
                        f"values, the first row has {self.dim}"
                    )
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            if values.dtype != self.dtype:
                values = values.astype(self.dtype)
            parts.append(values.reshape(-1, self.dim))
            row += len(chunk)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @contextmanager
    def reader(self) -> Iterator[Callable[[int, npt.NDArray[np.floating]], None]]:
        starts = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        cache: dict[str, Any] = {"index": -1, "rows": None}

        def read(lo: int, out: npt.NDArray[np.floating]) -> None:
            filled = 0
            while filled < out.shape[0]:
                row = lo + filled
                i = int(np.searchsorted(starts, row, side="right") - 1)
                if cache["index"] != i:
                    cache["index"], cache["rows"] = i, None
                    cache["rows"] = self._group(i, int(starts[i]))
                take = min(out.shape[0] - filled, int(starts[i + 1]) - row)
                begin = row - int(starts[i])
                out[filled : filled + take] = cache["rows"][begin : begin + take]
                filled += take

        yield read


def load_parquet_ids(
    path: Path, column: str, n: int, *, rows_of: str = "the embeddings"
) -> IdArray:
    """The ids in ``column`` of ``path``: exactly ``n``, valid and unique."""
    pf = _open(path)  # first: without pyarrow, the error that names the extra
    import pyarrow as pa

    if column not in pf.schema_arrow.names:
        raise InputError(
            f"{path.name} has no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})"
        )
    label = f"{path.name}:{column}"
    parts: list[IdArray] = []
    for i in range(pf.num_row_groups):
        col = pf.read_row_group(i, columns=[column]).column(0)
        if col.null_count:
            raise InputError(f"{label}: an id is null")
        kind = col.type
        if (
            pa.types.is_fixed_size_binary(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
        ):
            values = col.to_pylist()
            if any(len(v) != 16 for v in values):
                raise InputError(f"{label}: binary ids must be 16 bytes each")
            parts.append(np.frombuffer(b"".join(values), dtype="V16"))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            parts.append(as_ids(np.array(col.to_pylist()), label))
        else:
            raise InputError(f"{label} is {kind}; ids must be UUID strings or 16-byte binaries")
    ids = np.concatenate(parts) if parts else np.empty(0, dtype="V16")
    if ids.shape[0] != n:
        raise InputError(f"{label} holds {ids.shape[0]} ids but {rows_of} have {n} rows")
    check_unique(ids, label)
    return ids

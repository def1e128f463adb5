"""Labels saved by another tool, for ``clusterstore record``: ``.npy``, ``.parquet`` or CSV.

- ``.npy``: a 1-D integer array (ids from ``--ids``; distances from ``--distances``);
- ``.parquet`` / ``.csv`` (a header line, comma-separated): the labels column
  (``label_column``, default ``label`` or ``cluster``, whichever the file has), and
  optionally the ids (``id_column``: UUID strings, or 16-byte binaries in parquet) and the
  distances (``distance_column``). clusterstore's own CSV export reads back with
  ``id_column="embedding_id"``.
Everything is checked by ``record.record_labels``; this module only reads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError

from .ids import IdArray, as_ids
from .inputs import input_file

LABEL_COLUMNS = ("label", "cluster")


@dataclass(frozen=True)
class LabelsFile:
    labels: npt.NDArray[Any]
    ids: IdArray | None
    distances: npt.NDArray[Any] | None


def load_labels_file(
    path: str | Path,
    *,
    label_column: str | None = None,
    id_column: str | None = None,
    distance_column: str | None = None,
) -> LabelsFile:
    p = input_file(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if label_column or id_column or distance_column:
            raise InputError(f"{p.name} is a .npy array; the column options apply to CSV/parquet")
        return LabelsFile(load_npy(p, "labels"), None, None)
    if suffix == ".csv":
        columns = _read_csv(p)
    elif suffix == ".parquet":
        columns = _read_parquet(p)
    else:
        raise InputError(f"{p.name}: unsupported labels format; give a .npy, .csv or .parquet file")
    name = _label_column(p, columns, label_column)
    labels = _integers(p, name, columns[name])
    ids = (
        None
        if id_column is None
        else as_ids(_column(p, columns, id_column), f"{p.name}:{id_column}")
    )
    distances = None
    if distance_column is not None:
        distances = _floats(p, distance_column, _column(p, columns, distance_column))
    return LabelsFile(labels, ids, distances)


def load_npy(path: str | Path, what: str) -> npt.NDArray[Any]:
    p = input_file(path)
    try:
        return np.load(p, allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{p.name} is not a readable .npy array of {what} ({e})") from e


def _read_csv(p: Path) -> dict[str, list[str]]:
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise InputError(f"{p.name} is empty; a CSV of labels needs a header line")
            columns: dict[str, list[str]] = {name.strip(): [] for name in header}
            names = list(columns)
            for line, row in enumerate(reader, start=2):
                if len(row) != len(names):
                    raise InputError(
                        f"{p.name} line {line}: {len(row)} fields, the header has {len(names)}"
                    )
                for name, value in zip(names, row, strict=True):
                    columns[name].append(value)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {p.name}: {e}") from e
    return columns


def _read_parquet(p: Path) -> dict[str, Any]:
    from .parquet import _open

    table = _open(p).read()
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _label_column(p: Path, columns: dict[str, Any], given: str | None) -> str:
    if given is not None:
        _column(p, columns, given)
        return given
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise InputError(
        f"{p.name} has no label or cluster column; name it with --label-column "
        f"(columns: {', '.join(columns)})"
    )


def _column(p: Path, columns: dict[str, Any], name: str) -> Any:
    if name not in columns:
        raise InputError(f"{p.name} has no column {name!r} (columns: {', '.join(columns)})")
    values = columns[name]
    if any(v is None for v in values):
        row = next(i for i, v in enumerate(values) if v is None)
        raise InputError(f"{p.name}:{name} row {row} is empty")
    return values


def _integers(p: Path, name: str, values: list[Any]) -> npt.NDArray[Any]:
    """CSV text parsed as integers; a parquet column as it is (its type is checked later)."""
    if not all(isinstance(v, str) for v in values):
        return np.asarray(values)
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        row = next(i for i, v in enumerate(values) if not _is_int(v))
        raise InputError(f"{p.name}:{name} row {row}: {values[row]!r} is not an integer") from None


def _is_int(v: Any) -> bool:
    try:
        int(v)
        return True
    except (TypeError, ValueError, OverflowError):
        return False


def _floats(p: Path, name: str, values: list[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        row = next(i for i, v in enumerate(values) if not _is_float(v))
        raise InputError(f"{p.name}:{name} row {row}: {values[row]!r} is not a number") from None


def _is_float(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False

"""Which reader opens an input file, by its suffix: embeddings (``.npy``, ``.npz``,
``.parquet``) and ids (``.npy``, a text file of UUIDs, or a ``.parquet`` column).

Above the format modules (``inputs``, ``ids``, ``parquet``), which never import it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from clusterstore.eventstore.errors import InputError

from .ids import IdArray, load_array_ids
from .inputs import EmbeddingSource, NpyStreamSource, input_file
from .parquet import ParquetSource, load_parquet_ids


def load_ids(
    path: str | Path, n: int, *, column: str | None = None, rows_of: str = "the embeddings"
) -> IdArray:
    """The ids in ``path`` (``column`` of a ``.parquet`` file): exactly ``n`` of them (one
    per row of ``rows_of``), all valid and unique."""
    p = input_file(path)
    if column is not None or p.suffix.lower() == ".parquet":
        if column is None:
            raise InputError(f"{p.name}: name the ids column with --id-column")
        return load_parquet_ids(p, column, n, rows_of=rows_of)
    return load_array_ids(p, n, rows_of=rows_of)


def open_source(
    path: str | Path, npz_key: str | None = None, *, column: str | None = None
) -> EmbeddingSource:
    """The embeddings in ``path`` (``.npy``; ``.npz`` with ``npz_key`` unless it holds a
    single array; ``.parquet`` with ``column`` unless it has a single list column); checks
    format, dtype and shape, reads no data."""
    p = input_file(path)
    suffix = p.suffix.lower()
    if column is not None and suffix != ".parquet":
        raise InputError(f"{p.name}: --embeddings-column only applies to .parquet files")
    if suffix == ".npy":
        if npz_key is not None:
            raise InputError(f"{p.name} is a .npy file; --npz-key only applies to .npz files")
        return NpyStreamSource(p)
    if suffix == ".npz":
        return NpyStreamSource(p, _choose_member(p, npz_key))
    if suffix == ".parquet":
        return ParquetSource(p, column)
    raise InputError(f"{p.name}: unsupported input format; give a .npy, .npz or .parquet file")


def _choose_member(path: Path, key: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path.name} is not a .npz archive ({e})") from e
    shown = ", ".join(names) if names else "no arrays"
    if key is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise InputError(f"{path.name} holds no arrays")
        raise InputError(f"{path.name} holds several arrays ({shown}); choose one with --npz-key")
    if key not in names:
        raise InputError(f"{path.name} has no array {key!r} (it holds: {shown})")
    return key

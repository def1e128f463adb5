"""Texts for embedding ids, read from a CSV or Parquet file the user names.

The file is streamed (CSV row by row, Parquet batch by batch, only the two named columns):
only the texts of the ``wanted`` ids are kept, so memory is bounded by what is shown, not by
the file. Rows whose id matches no embedding of the run are counted (a warning, not an
error): the run's ids are given as 64-bit hashes (``compare.id_hash``), checked in chunks.
Ids are UUIDs in any form ``uuid.UUID`` reads (with or without dashes, any case); an id
that is not a UUID matches nothing.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import ConfigurationError, InputError

from .compare import id_hash

CHUNK = 65_536
TEXT_CHARS = 500  # a text longer than this is cut (with an ellipsis) where it is shown


@dataclass(frozen=True)
class TextsSource:
    """Where texts come from: a .csv or .parquet file and its two columns."""

    path: str
    id_column: str = "id"
    text_column: str = "text"


@dataclass(frozen=True)
class Texts:
    path: str
    by_id: dict[bytes, str]  # 16-byte id -> text, for the wanted ids found
    n_rows: int
    n_unmatched: int  # rows whose id is no embedding of the run

    def get(self, embedding_id: str) -> str | None:
        return self.by_id.get(uuid.UUID(embedding_id).bytes)


def load_texts(
    path: str | os.PathLike[str],
    *,
    id_column: str,
    text_column: str,
    wanted: Iterable[str],
    run_hashes: npt.NDArray[np.uint64],
) -> Texts:
    """The texts of ``wanted`` ids (canonical UUID texts) from ``path`` (.csv or .parquet),
    and how many of the file's rows match no id whose hash is in ``run_hashes``."""
    shown = os.fspath(path)
    if not Path(shown).is_file():
        raise InputError(f"texts file {shown} does not exist or is not a file")
    want = {uuid.UUID(w).bytes for w in wanted}
    known = np.unique(run_hashes)
    by_id: dict[bytes, str] = {}
    rows = unmatched = 0
    for ids, texts in _chunks(Path(shown), id_column, text_column):
        raw = [_id_bytes(i) for i in ids]
        good = [b for b in raw if b is not None]
        if good:
            hashes = id_hash(np.frombuffer(b"".join(good), dtype="V16"))
            unmatched += int((~np.isin(hashes, known, assume_unique=False)).sum())
        unmatched += len(raw) - len(good)
        rows += len(raw)
        for b, t in zip(raw, texts, strict=True):
            if b is not None and b in want and t is not None:
                by_id[b] = _shorten(str(t))
    return Texts(shown, by_id, rows, unmatched)


def check_texts_file(path: str | os.PathLike[str], *, id_column: str, text_column: str) -> None:
    """Fail early, before the run is read, on a texts file that is missing, of an unknown
    format, or without the named columns (reads the header only)."""
    shown = Path(os.fspath(path))
    if not shown.is_file():
        raise InputError(f"texts file {shown} does not exist or is not a file")
    chunks = _chunks(shown, id_column, text_column)
    next(chunks, None)  # the generators check the columns before their first chunk
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _id_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return bytes(value)
    try:
        return uuid.UUID(str(value).strip()).bytes
    except ValueError:
        return None


def _shorten(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def _chunks(path: Path, id_column: str, text_column: str) -> Iterator[tuple[list[Any], list[Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_chunks(path, id_column, text_column)
    if suffix in (".parquet", ".pq"):
        return _parquet_chunks(path, id_column, text_column)
    raise InputError(f"cannot tell the format of texts file {path}; name it .csv or .parquet")


def _missing(path: Path, have: list[str], need: list[str]) -> InputError:
    absent = [c for c in need if c not in have]
    return InputError(
        f"texts file {path} has no column {', '.join(repr(c) for c in absent)} "
        f"(its columns: {', '.join(have) or 'none'}); name them with --id-column and "
        "--text-column"
    )


def _csv_chunks(
    path: Path, id_column: str, text_column: str
) -> Iterator[tuple[list[Any], list[Any]]]:
    csv.field_size_limit(1 << 24)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if id_column not in header or text_column not in header:
                raise _missing(path, header, [id_column, text_column])
            ic, tc = header.index(id_column), header.index(text_column)
            ids: list[Any] = []
            texts: list[Any] = []
            for row in reader:
                ids.append(row[ic] if ic < len(row) else None)
                texts.append(row[tc] if tc < len(row) else None)
                if len(ids) >= CHUNK:
                    yield ids, texts
                    ids, texts = [], []
            if ids:
                yield ids, texts
    except UnicodeDecodeError as e:
        raise InputError(f"texts file {path} is not UTF-8 text: {e.reason}") from e
    except csv.Error as e:
        raise InputError(f"texts file {path} is not valid CSV: {e}") from e


def _parquet_chunks(
    path: Path, id_column: str, text_column: str
) -> Iterator[tuple[list[Any], list[Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ConfigurationError(
            "reading texts from parquet needs pyarrow: pip install 'clusterstore[parquet]'"
        ) from e
    try:
        file = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise InputError(f"texts file {path} is not a Parquet file ({e})") from e
    names = list(file.schema_arrow.names)
    if id_column not in names or text_column not in names:
        raise _missing(path, names, [id_column, text_column])
    for batch in file.iter_batches(batch_size=CHUNK, columns=[id_column, text_column]):
        yield batch.column(0).to_pylist(), batch.column(1).to_pylist()

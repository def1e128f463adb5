"""Exporting a run's assignments: ``embedding_id``, ``cluster``, ``distance`` in seq order.

Streamed page by page (memory stays flat) through ``output_file.open_output``: the file is
created and never substitutes what is at the path (an existing file only with ``force``,
never the store's own files), and only a complete file appears; ``-`` is standard output
(csv and parquet; npy needs the row count in its header before the rows). The format
follows the file's extension (``export_format``). A run that is not completed is refused
unless ``allow_incomplete``. The bytes depend only on the assignments, never on how the
log was paged or batched, so two runs over the same input that made the same assignments
export to identical files.

- csv: a header line, then ``uuid,cluster,distance`` (the float32's shortest exact text);
- npy: one structured array, dtype ``[('embedding_id', 'V16'), ('cluster', '<u4'),
  ('distance', '<f4')]``; ``np.load`` reads it;
- parquet: columns string, uint32, float32 in row groups of ``ROW_GROUP`` rows
  (needs pyarrow: ``pip install 'clusterstore[parquet]'``).

Noise (label -1) is written as -1 in every format. A uint32 cannot hold it, so the cluster
column of a run that has noise is signed: ``'<i8'`` in npy, int64 in parquet
(``NOISY_EXPORT_DTYPE``); a run without noise keeps the unsigned column and exports to the
same bytes as before noise existed. Whether a run has noise comes from its RunCompleted
(``n_noise``), or, for an incomplete run, from a first pass over its labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.codec import labels_of
from clusterstore.eventstore.errors import (
    ConfigurationError,
    EventDecodeError,
    IncompleteRunError,
    InputError,
    OutputFileError,
)

from ._log import PAGE_SIZE, AssignmentBlock, ProgressFn, assignment_blocks, uuid_texts
from .output_file import STDOUT, open_output
from .summary import Status, summarize_run

Format = Literal["csv", "npy", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "npy", "parquet")
EXPORT_DTYPE = np.dtype([("embedding_id", "V16"), ("cluster", "<u4"), ("distance", "<f4")])
NOISY_EXPORT_DTYPE = np.dtype(
    [("embedding_id", "V16"), ("cluster", "<i8"), ("distance", "<f4")]
)  # a run with noise (-1)
CSV_HEADER = "embedding_id,cluster,distance\n"
ROW_GROUP = 65_536
_NPY_MAGIC = b"\x93NUMPY\x01\x00"


class ExportResult(NamedTuple):
    run_id: UUID
    path: str  # as given; "-" is standard output
    format: Format
    rows: int
    status: Status  # "completed" unless allow_incomplete let another through

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "path": self.path,
            "format": self.format,
            "n_assignments": self.rows,
            "status": self.status,
        }


def export_format(path: str | os.PathLike[str], format: str | None = None) -> Format:
    """The format for ``path``: its extension (.csv, .npy, .parquet), or ``format``, which
    must agree with a known extension; ``-`` (standard output) needs ``format``."""
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; use csv, npy or parquet")
    text = os.fspath(path)
    suffix = Path(text).suffix.lower().lstrip(".")
    known = suffix if suffix in FORMATS else None
    if format is None:
        if text == STDOUT:
            raise OutputFileError("writing to standard output (-o -) needs --format csv or parquet")
        if known is None:
            raise OutputFileError(
                f"cannot tell the format of {text} from its extension; name it .csv, .npy or "
                ".parquet, or give --format csv, npy or parquet"
            )
        return known  # type: ignore[return-value]
    if known is not None and known != format:
        raise OutputFileError(
            f"{text} has the extension .{known} but --format is {format}; "
            f"name the file .{format} or drop --format"
        )
    return format  # type: ignore[return-value]


def export_run(
    store: EventStore,
    run_id: UUID,
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,
    force: bool = False,
    allow_incomplete: bool = False,
    page_size: int = PAGE_SIZE,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write the run's assignments to ``path`` (see the module docstring for the rules)."""
    chosen = export_format(path, format)
    if chosen == "npy" and os.fspath(path) == STDOUT:
        raise OutputFileError(
            "npy cannot be streamed to standard output (its header holds the row count); "
            "give a file name, or use --format csv or parquet"
        )
    pa = _pyarrow() if chosen == "parquet" else None
    summary = summarize_run(store, run_id)
    if summary.status != "completed" and not allow_incomplete:
        raise IncompleteRunError(
            run_id,
            summary.status,
            summary.n_assignments,
            f"run {run_id} is not completed (status: {summary.status_label}); "
            f"{summary.n_assignments} assignments are recorded; pass --allow-incomplete "
            "to export them anyway",
        )
    noisy = False
    if chosen != "csv":  # the column type: signed only for a run with noise
        noisy = (
            summary.completed.n_noise > 0
            if summary.completed is not None
            else _has_noise(store, run_id, page_size)
        )
    blocks = assignment_blocks(store, run_id, page_size=page_size, on_progress=on_progress)
    if chosen != "csv" and not noisy:
        blocks = _no_noise(blocks, run_id, summary.status)
    with open_output(path, force=force, protect=store.local_files()) as out:
        if chosen == "csv":
            count = _write_csv(out, blocks)
        elif chosen == "npy":
            count = _write_npy(out, blocks, NOISY_EXPORT_DTYPE if noisy else EXPORT_DTYPE)
        else:
            count = _write_parquet(out, blocks, pa, noisy=noisy)
    return ExportResult(run_id, os.fspath(path), chosen, count, summary.status)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise ConfigurationError(
            "parquet export needs pyarrow, which is not installed: "
            "pip install 'clusterstore[parquet]' (or use --format csv or npy)"
        ) from e
    return pyarrow


def _has_noise(store: EventStore, run_id: UUID, page_size: int) -> bool:
    """Whether an incomplete run (no RunCompleted to say it) holds a noise label."""
    return any(
        bool((labels_of(block.records) < 0).any())
        for block in assignment_blocks(store, run_id, page_size=page_size)
    )


def _no_noise(
    blocks: Iterator[AssignmentBlock], run_id: UUID, status: Status
) -> Iterator[AssignmentBlock]:
    """The blocks of a run exported with an unsigned cluster column. Noise there means the
    run gained it while exporting (a running run) or its RunCompleted does not count it (a
    damaged log): the export stops and no file appears."""
    for block in blocks:
        noise = np.flatnonzero(labels_of(block.records) < 0)
        if len(noise):
            why = (
                "its RunCompleted counts none (`clusterstore runs verify` checks the run)"
                if status == "completed"
                else "it was recorded while the run was being exported; export it again"
            )
            raise EventDecodeError(
                run_id, int(block.seqs[noise[0]]), f"the run holds noise (label -1), but {why}"
            )
        yield block


def _export_records(
    block: AssignmentBlock, dtype: np.dtype[Any] = EXPORT_DTYPE
) -> npt.NDArray[np.void]:
    out = np.empty(len(block.records), dtype=dtype)
    out["embedding_id"] = block.records["embedding_id"]
    out["cluster"] = (
        labels_of(block.records) if dtype is NOISY_EXPORT_DTYPE else block.records["cluster"]
    )
    out["distance"] = block.records["distance"]
    return out


def _write_csv(out: IO[bytes], blocks: Iterator[AssignmentBlock]) -> int:
    out.write(CSV_HEADER.encode())
    count = 0
    for block in blocks:
        rec = block.records
        ids = uuid_texts(rec["embedding_id"])
        clusters = labels_of(rec).tolist()
        dists = rec["distance"].astype(str).tolist()
        text = "".join(f"{i},{c},{d}\n" for i, c, d in zip(ids, clusters, dists, strict=True))
        out.write(text.encode())
        count += len(rec)
    return count


def npy_header(count: int, dtype: np.dtype[Any] = EXPORT_DTYPE) -> bytes:
    """The .npy (version 1.0) header for ``count`` records, always the same length, so it
    can be written first and rewritten once the count is known."""
    descr = np.lib.format.dtype_to_descr(dtype)
    widest = repr({"descr": descr, "fortran_order": False, "shape": (10**18,)})
    total = -(-(len(_NPY_MAGIC) + 2 + len(widest) + 1) // 64) * 64
    text = repr({"descr": descr, "fortran_order": False, "shape": (count,)})
    text = text.ljust(total - len(_NPY_MAGIC) - 2 - 1) + "\n"
    return _NPY_MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


def _write_npy(out: IO[bytes], blocks: Iterator[AssignmentBlock], dtype: np.dtype[Any]) -> int:
    out.write(npy_header(0, dtype))
    count = 0
    for block in blocks:
        out.write(_export_records(block, dtype).tobytes())
        count += len(block.records)
    out.seek(0)
    out.write(npy_header(count, dtype))
    return count


def _write_parquet(
    out: IO[bytes], blocks: Iterator[AssignmentBlock], pa: Any, *, noisy: bool = False
) -> int:
    cluster_type = pa.int64() if noisy else pa.uint32()
    dtype = NOISY_EXPORT_DTYPE if noisy else EXPORT_DTYPE
    schema = pa.schema(
        [("embedding_id", pa.string()), ("cluster", cluster_type), ("distance", pa.float32())]
    )
    pending: list[npt.NDArray[np.void]] = []
    held = 0
    count = 0
    with pa.parquet.ParquetWriter(out, schema, compression="zstd") as writer:
        for block in blocks:
            pending.append(_export_records(block, dtype))
            held += len(block.records)
            while held >= ROW_GROUP:
                rows = np.concatenate(pending)
                _write_group(writer, rows[:ROW_GROUP], schema, pa)
                pending, held = [rows[ROW_GROUP:]], held - ROW_GROUP
                count += ROW_GROUP
        if held:
            _write_group(writer, np.concatenate(pending), schema, pa)
            count += held
    return count


def _write_group(writer: Any, rows: npt.NDArray[np.void], schema: Any, pa: Any) -> None:
    table = pa.table(
        {
            "embedding_id": pa.array(uuid_texts(rows["embedding_id"]), pa.string()),
            "cluster": pa.array(rows["cluster"], schema.field("cluster").type),
            "distance": pa.array(rows["distance"], pa.float32()),
        },
        schema=schema,
    )
    writer.write_table(table, row_group_size=ROW_GROUP)

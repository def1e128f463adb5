"""Turning legacy clustering results into runs in the log.

Each legacy result becomes one run whose run id IS the legacy result id, so SQL that filters
``embeddingcluster`` on an old ``clustering_result_id`` still finds its rows:

    seq 1          RunStarted (imported_from, legacy_id, legacy_cluster_ids, detected model,
                   algorithm, parameters and timestamps)
    seq 2 .. N+1   AssignmentRecorded per legacy row, in legacy row-id order, keeping the
                   legacy row id; cluster index = position of the legacy cluster UUID in
                   ``legacy_cluster_ids`` (sorted by bytes); distance NaN (the legacy schema
                   has none)
    seq N+2        RunCompleted (count, digest, cluster sizes)

A result with no rows (the debris of a rolled-back run), or one whose rows fall short of a
count column it declares, or whose status column says it failed, is imported as a failed
run: its rows (if any) are kept as assignments and RunFailed explains why.

Every event is a pure function of the legacy data, so an import interrupted half-way is
finished by running it again (the store takes the re-sent chunks as no-ops), and a
finished import is skipped.

Every row of a result is read and checked (ids are UUIDs, dates parse) before anything of
that result is written: a malformed row is ``LegacyRowError`` naming its table, row and
column, and the store holds nothing of that result (results imported before it stay).

A legacy source that changed after an interrupted import (the result's facts, row count or
clusters, or a row already written) cannot finish that run: the log is append-only and
the run id is the legacy id. Such a result is skipped, state ``changed``, with a warning
naming it; the partial run stays as it was, and the rest of the source is imported.
Restoring the source as it was lets a later import finish it.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from clusterstore.eventstore import EventStore
from clusterstore.eventstore.digest import CURRENT_DIGEST_VERSION
from clusterstore.eventstore.errors import DiskFullError, EventConflictError, InputError
from clusterstore.eventstore.events import RunStarted
from clusterstore.eventstore.runs import ProgressFn, RunWriter
from clusterstore.eventstore.store import decode_stored

from .source import CHUNK, LegacyImportConflictError, LegacyResult, LegacySource

EMPTY_RESULT_ERROR = (
    "imported from a legacy database: the result has no assignment rows (its run was rolled "
    "back or never written, e.g. after 'UNIQUE constraint failed: embeddingcluster.id')"
)

State = Literal["new", "partial", "imported", "conflict", "changed"]


@dataclass(frozen=True)
class ImportItem:
    result: LegacyResult
    rows: int
    clusters: list[uuid.UUID]
    state: State  # before this import

    @property
    def run_id(self) -> uuid.UUID:
        return self.result.id

    @property
    def final_seq(self) -> int:
        return self.rows + 2

    @property
    def failure(self) -> str | None:
        """Why this legacy result is imported as a failed run (None: it completed)."""
        r = self.result
        if self.rows == 0:
            return EMPTY_RESULT_ERROR
        if r.declared_rows is not None and r.declared_rows != self.rows:
            return (
                f"imported from a legacy database: the result declares {r.declared_rows} "
                f"embeddings but has {self.rows} assignment rows (a half-written run)"
            )
        if r.status is not None and r.status.lower() in ("failed", "failure", "error", "aborted"):
            return f"imported from a legacy database: its status was {r.status!r}"
        return None


@dataclass
class ImportReport:
    source: str
    dry_run: bool
    items: list[ImportItem]
    imported: int = 0
    resumed: int = 0
    skipped: int = 0
    failed_runs: int = 0
    assignments: int = 0
    changed: list[ImportItem] = dataclasses.field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per result skipped because the source changed under its partial run."""
        return [
            f"legacy result {i.run_id} changed after its import was interrupted "
            f"({i.result.model}, {i.rows} rows now); skipped: its partial run stays as it was "
            "(the log is append-only); restore the source to finish it"
            for i in self.changed
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "n_results": len(self.items),
            "n_imported": self.imported,
            "n_resumed": self.resumed,
            "n_skipped": self.skipped,
            "n_failed_runs": self.failed_runs,
            "n_source_changed": len(self.changed),
            "n_assignments": self.assignments,
            "runs": [
                {
                    "run_id": str(i.run_id),
                    "model": i.result.model,
                    "n_assignments": i.rows,
                    "k": len(i.clusters),
                    "before_import": i.state,
                    "status": "failed" if i.failure else "completed",
                }
                for i in self.items
            ],
        }


def plan(source: LegacySource, store: EventStore | None) -> list[ImportItem]:
    """What importing ``source`` would do, result by result (reads only). ``store`` None:
    there is no store yet (a dry run before the first import), so every result is new."""
    items = []
    for result in source.list_results():
        rows, clusters = source.result_stats(result.id)
        head = 0 if store is None else store.head(result.id)
        final = rows + 2
        state: State
        if head == 0:
            state = "new"
        elif store is None or not _is_import_of(store, result.id):
            state = "conflict"
        else:
            state = "imported" if head >= final else "partial"
        item = ImportItem(result, rows, clusters, state)
        if state == "partial" and store is not None and not _same_start(store, source, item):
            item = dataclasses.replace(item, state="changed")
        items.append(item)
    return items


def _same_start(store: EventStore, source: LegacySource, item: ImportItem) -> bool:
    """Does the partial run's RunStarted say what the source says now (the path the source
    was given by aside)?"""
    stored = decode_stored(next(iter(store.read_raw(item.run_id, limit=1))))
    now = run_started(source, item)
    # the digest version is the release's that began the import (an older one: 1)
    same = {"imported_from": None, "digest_version": 1}
    return msgspec.structs.replace(stored, **same) == msgspec.structs.replace(now, **same)


def _is_import_of(store: EventStore, run_id: uuid.UUID) -> bool:
    first = next(iter(store.read_raw(run_id, limit=1)), None)
    if first is None:
        return False
    event = decode_stored(first)
    return isinstance(event, RunStarted) and event.legacy_id == run_id


def run_started(source: LegacySource, item: ImportItem) -> RunStarted:
    r = item.result
    params = dict(r.params)
    if r.extra:
        params["legacy_columns"] = r.extra
    return RunStarted(
        model=r.model,
        algorithm=r.algorithm,
        params=params,
        n_embeddings=item.rows,
        dim=0,
        k=len(item.clusters),
        started_at=r.started_at,
        imported_from=source.display,
        legacy_id=r.id,
        legacy_cluster_ids=item.clusters,
        digest_version=CURRENT_DIGEST_VERSION,
    )


def import_legacy(
    source: LegacySource,
    store: EventStore | None,
    *,
    dry_run: bool = False,
    on_progress: ProgressFn | None = None,
    chunk: int = CHUNK,
) -> ImportReport:
    """Import every legacy result not yet in the store. Idempotent. ``store`` None: only
    with ``dry_run``, where there is no store yet."""
    target = None if dry_run else store  # where rows are written
    if target is None and not dry_run:
        raise ValueError("import_legacy needs a store unless it is a dry run")
    items = plan(source, store)
    conflicts = [i.run_id for i in items if i.state == "conflict"]
    if conflicts:
        raise LegacyImportConflictError(
            f"run {conflicts[0]} already exists in the store and is not an import of legacy "
            f"result {conflicts[0]}; nothing was imported"
        )
    report = ImportReport(source.display, dry_run, items)
    for n, item in enumerate(items):
        if item.state == "imported":
            report.skipped += 1
            continue
        if item.state == "partial" and target is not None:
            try:
                _import_one(source, target, item, on_progress, chunk)
            except _RowsChanged:
                item = items[n] = dataclasses.replace(item, state="changed")
        elif item.state == "new":
            if target is None:
                source.check_rows(item.run_id, chunk)
            else:
                _import_one(source, target, item, on_progress, chunk)
        if item.state == "changed":
            report.changed.append(item)
            continue
        if item.failure:
            report.failed_runs += 1
        report.imported += item.state == "new"
        report.resumed += item.state == "partial"
        report.assignments += item.rows
    return report


class _RowsChanged(Exception):
    """A re-sent row of a partial import differs from the one stored."""


def _import_one(
    source: LegacySource,
    store: EventStore,
    item: ImportItem,
    on_progress: ProgressFn | None,
    chunk: int,
) -> None:
    """Write one legacy result through the run writer. A partial import is finished by
    re-sending every row from the first (the store takes identical re-sends as no-ops), so
    the digest and sizes cover the whole run; nothing is appended on an error, so running
    the import again finishes it (no RunFailed of this import's own)."""
    run_id = item.run_id
    if source.check_rows(run_id, chunk) != item.rows:
        raise InputError(
            f"legacy result {run_id}: the number of rows changed while it was read; is the "
            "legacy database being written to? Nothing of it was written."
        )
    if item.state == "new":
        started = run_started(source, item)  # a pure function of the legacy data
        writer = RunWriter.begin(store, run_id, started, batch_size=chunk)
    else:  # seq 1 is this import's RunStarted (plan checked it): start over after it,
        # with the digest version it declares (an import begun by an older release: 1)
        started = _stored_start(store, run_id)
        writer = RunWriter(store, run_id, started, head=1, batch_size=chunk)
    writer.on_progress = on_progress
    try:
        _write_rows(source, writer, item, chunk)
    except DiskFullError as e:
        raise e.stopping(run_id, "run the import again: it finishes this run") from e


def _write_rows(source: LegacySource, writer: RunWriter, item: ImportItem, chunk: int) -> None:
    """The result's rows, then RunCompleted or RunFailed (``_finish``)."""
    run_id = item.run_id
    index = {u.bytes: i for i, u in enumerate(item.clusters)}
    read = 0
    for row_ids, embedding_ids, cluster_ids in source.iter_rows(run_id, chunk):
        read += len(cluster_ids)
        if read > item.rows:
            break  # more rows than counted: refused below, before they are written
        labels = np.fromiter(
            (index[bytes(c)] for c in cluster_ids), dtype=np.int64, count=len(cluster_ids)
        )
        try:
            writer.record(embedding_ids, labels, np.full(len(labels), np.nan), legacy_ids=row_ids)
        except EventConflictError as e:
            if item.state != "partial":
                raise
            raise _RowsChanged() from e  # only rows already stored can conflict: none added
    if read != item.rows:
        raise InputError(
            f"legacy result {run_id}: {read} rows read but {item.rows} counted; is the legacy "
            "database being written to? The import can be run again."
        )
    _finish(writer, item)


def _stored_start(store: EventStore, run_id: uuid.UUID) -> RunStarted:
    first = next(iter(store.read_raw(run_id, limit=1)))
    event = decode_stored(first)
    assert isinstance(event, RunStarted)  # ``plan`` checked it
    return event


def _finish(writer: RunWriter, item: ImportItem) -> None:
    """The run's last event: RunCompleted (count, digest and sizes from the writer), or
    RunFailed for a result that did not finish; at the legacy result's time either way."""
    finished = item.result.finished_at or item.result.started_at
    if item.failure:
        writer.record_failure(item.failure, failed_at=finished, error_type="LegacyIncompleteResult")
    else:
        writer.complete(finished_at=finished)

"""``Store``: the front door. One object with a verb per thing a user does with runs.

Write verbs (``cluster``, ``record``, ``assign``) end by bringing the read models up to
date, as the CLI's commands do, so ``embeddingcluster`` shows the new run at once; the views
exist from the moment a store is created. Opening an existing store writes nothing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload
from uuid import UUID

import numpy.typing as npt

from clusterstore.audit.summary import parse_status, summarize_run
from clusterstore.eventstore.errors import EventStoreError
from clusterstore.eventstore.store import EventStore

from ._run import Run

if TYPE_CHECKING:
    from clusterstore import projections
    from clusterstore.audit import Comparison, ExportResult, ReportResult, VerifyReport
    from clusterstore.audit.verify import ReadModelCheck
    from clusterstore.clustering import EmbeddingSource
    from clusterstore.projections.lookup import WhichResult

RunRef = Run | UUID | str
Embeddings = str | os.PathLike[str] | npt.ArrayLike


class ReadModelWarning(RuntimeWarning):
    """A write verb stored its run, but the read models could not be brought up to date
    (another runner held them too long, a damaged event, a lost connection);
    ``store.catch_up()`` retries."""


def open_store(url_or_path: str | os.PathLike[str] | None = None) -> Store:
    """Open the store at a SQLite path or a ``postgresql://`` URL (default:
    ``$CLUSTERSTORE_DB``, then ``./clusterstore.db``), creating it, with its read-model
    views, on first use. Use it as a context manager, or call ``close()``."""
    return Store(open_event_store(url_or_path))


def open_event_store(
    db: str | os.PathLike[str] | None,
    *,
    allow_existing: bool = False,
    create: bool = True,
    warn: Callable[[str], None] | None = None,
    partitions: int | None = None,
) -> EventStore:
    """``EventStore.open``; a store this call created gets its read-model views at once.
    ``create=False``: an existing store, opened for reading only. ``partitions``: see
    ``EventStore.open``."""
    store = EventStore.open(db, allow_existing=allow_existing, create=create, partitions=partitions)
    if store.created:
        try:
            ensure_read_models(store, warn=warn, done="the store is created")
        except BaseException:
            store.close()
            raise
    return store


def ensure_read_models(
    store: EventStore,
    *,
    warn: Callable[[str], None] | None = None,
    done: str = "the log is written",
) -> None:
    """Bring the read models (and their views) up to date. What the log holds is committed
    whatever happens here, so a failure is reported through ``warn`` (default: a
    ``ReadModelWarning``) after ``done``, not raised."""
    from clusterstore import projections

    try:
        projections.catch_up(store, on_damage=damage_warning(warn, done))
    except EventStoreError as e:
        message = (
            f"{done}, but the read models are not up to date: {e}; "
            "`store.catch_up()` or `clusterstore projections catch-up` retries"
        )
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, ReadModelWarning, stacklevel=3)


def damage_warning(
    warn: Callable[[str], None] | None, done: str
) -> Callable[[projections.DeadLetter], None]:
    """What to tell of a run the read models start to skip (a damaged event): through
    ``warn``, or a ``ReadModelWarning``."""
    from clusterstore.projections.dead_letter import REPAIR

    def damaged(letter: projections.DeadLetter) -> None:
        message = f"{done}; {letter.line()}; {REPAIR}"
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, ReadModelWarning, stacklevel=5)

    return damaged


class Store:
    """A clusterstore: runs, their assignments, and the read models over them."""

    def __init__(self, event_store: EventStore, *, warn: Callable[[str], None] | None = None):
        self.event_store = event_store  # the log underneath, for what the API does not cover
        self._warn = warn

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Where the store is (a password is masked)."""
        return self.event_store.display_url

    def close(self) -> None:
        self.event_store.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<clusterstore.Store {self.url}>"

    # ------------------------------------------------------------------ reading

    def run(self, run: RunRef) -> Run:
        """A run by id, unique prefix of its id (dashes optional) or ``Run``."""
        return Run(summarize_run(self.event_store, self._run_id(run)))

    def runs(self, model: str | None = None, status: str | None = None) -> list[Run]:
        """Every run, newest first; optionally only one model's and/or one status
        (running, completed or failed)."""
        from clusterstore.audit import list_runs

        wanted = None if status is None else parse_status(status)
        return [Run(s) for s in list_runs(self.event_store, status=wanted, model=model)]

    def labels(self, run: RunRef) -> tuple[Any, Any, Any]:
        """``(ids, clusters, distances)`` of the run's assignments in recorded order, as
        numpy arrays: ids ``V16`` (the 16 bytes of each UUID; ``uuid.UUID(bytes=x.tobytes())``),
        clusters ``int64``, distances ``float32`` (NaN where none was recorded)."""
        from clusterstore.audit import run_labels

        return run_labels(self.event_store, self._run_id(run))

    def compare(self, a: RunRef, b: RunRef, *, top: int = 10) -> Comparison:
        """ARI, NMI and the largest cluster overlaps of two runs over their shared ids."""
        from clusterstore.audit import compare_runs

        return compare_runs(self.event_store, self._run_id(a), self._run_id(b), top=top)

    @overload
    def verify(self, run: None = None) -> list[VerifyReport]: ...

    @overload
    def verify(self, run: RunRef) -> VerifyReport: ...

    def verify(self, run: RunRef | None = None) -> VerifyReport | list[VerifyReport]:
        """Check a run's log (sequences, digest, sizes, the read model); ``report.ok``.
        Without a run: every run, oldest first."""
        from clusterstore.audit import verify_run, verify_runs

        check = _read_model_check()
        if run is not None:
            return verify_run(self.event_store, self._run_id(run), read_model=check)
        runs = [h.run_id for h in self.event_store.runs()]
        return verify_runs(self.event_store, runs, read_model=check)

    def export(
        self,
        run: RunRef,
        path: str | os.PathLike[str],
        format: str | None = None,
        *,
        force: bool = False,
        allow_incomplete: bool = False,
    ) -> ExportResult:
        """Write the run's ``embedding_id, cluster, distance`` rows to a .csv, .npy or
        .parquet file (``format`` must agree with the extension). The file is created, never
        substituted: an existing file only with ``force``, never the store's own files."""
        from clusterstore.audit import export_format, export_run

        chosen = export_format(path, format)
        return export_run(
            self.event_store,
            self._run_id(run),
            path,
            format=chosen,
            force=force,
            allow_incomplete=allow_incomplete,
        )

    def report(
        self,
        run: RunRef,
        path: str | os.PathLike[str],
        *,
        compare_to: RunRef | None = None,
        texts: str | os.PathLike[str] | None = None,
        id_column: str = "id",
        text_column: str = "text",
        members: int = 5,
        force: bool = False,
    ) -> ReportResult:
        """Write a self-contained HTML report of the run (``compare_to``: matched clusters,
        ARI/NMI against another run; ``texts``: a .csv/.parquet of ids and texts shown for
        the members nearest each centroid). The file is created, never substituted."""
        from clusterstore.audit import TextsSource, write_report

        source = TextsSource(os.fspath(texts), id_column, text_column) if texts else None
        other = None if compare_to is None else self._run_id(compare_to)
        return write_report(
            self.event_store,
            self._run_id(run),
            path,
            compare_to=other,
            texts=source,
            members=members,
            force=force,
        )

    def which(self, embedding_id: Any, *, model: str | None = None) -> WhichResult:
        """The cluster, cluster_id and distance of one embedding in every completed run
        (from the lookup index when it is on: ``clusterstore projections lookup-index on``)."""
        from clusterstore import projections

        return projections.which(self.event_store, embedding_id, model=model)

    def catch_up(self) -> dict[str, int]:
        """Bring the read models up to date with the log; events applied per read model."""
        from clusterstore import projections

        done = "the read models are up to date"
        return projections.catch_up(self.event_store, on_damage=damage_warning(self._warn, done))

    # ------------------------------------------------------------------ writing

    def cluster(
        self,
        embeddings: Embeddings,
        *,
        model: str,
        k: int,
        ids: str | os.PathLike[str] | npt.ArrayLike | None = None,
        seed: int | None = None,
        spherical: bool = False,
        **settings: Any,
    ) -> Run:
        """k-means (faiss) over an N x d array or a .npy/.npz/.parquet file, every
        assignment recorded. ``ids``: UUIDs, UUID strings, 16-byte values or a file (default:
        derived from the input). More settings: iterations, batch_size, threads,
        train_per_centroid, chunk_rows; for files npz_key, embeddings_column, id_column."""
        from clusterstore.clustering import ArraySource, ClusterSettings, cluster, cluster_file

        files = {key: settings.pop(key) for key in _FILE_OPTIONS if key in settings}
        config = ClusterSettings(model=model, k=k, seed=seed, spherical=spherical, **settings)
        if isinstance(embeddings, str | os.PathLike):
            path = Path(os.fspath(embeddings))
            result = cluster_file(self.event_store, path, config, ids=_path_or(ids), **files)
        else:
            if files:
                raise TypeError(f"{', '.join(files)} only apply to a file input")
            result = cluster(self.event_store, ArraySource(embeddings), config, ids=_path_or(ids))
        return self._written(result.run_id)

    def record(
        self,
        ids: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        model: str,
        algorithm: str,
        distances: npt.ArrayLike | None = None,
        centroids: npt.ArrayLike | None = None,
        params: dict[str, Any] | None = None,
    ) -> Run:
        """Record labels made by any clustering as a completed run: one label per id,
        ``-1`` for noise. ``centroids`` (k x dim) let ``assign`` use the run later."""
        from clusterstore.clustering.record import record_labels

        run_id = record_labels(
            self.event_store,
            ids,
            labels,
            model=model,
            algorithm=algorithm,
            distances=distances,
            centroids=centroids,
            params=params,
        )
        return self._written(run_id)

    def assign(
        self,
        run: RunRef,
        embeddings: Embeddings,
        ids: str | os.PathLike[str] | npt.ArrayLike | None = None,
        **options: Any,
    ) -> Run:
        """Label new embeddings with ``run``'s centroids (its metric, no retraining) and
        record them as a new run whose ``parent_run_id`` is ``run``; in ``embeddingcluster``
        its rows carry the parent's ``cluster_id``s. Options: batch_size, threads,
        chunk_rows; for files npz_key, embeddings_column, id_column."""
        from clusterstore.clustering import ArraySource, open_source
        from clusterstore.clustering.predict import assign

        files = {key: options.pop(key) for key in _FILE_OPTIONS if key in options}
        id_column = files.pop("id_column", None)
        source: EmbeddingSource
        if isinstance(embeddings, str | os.PathLike):
            source = open_source(
                os.fspath(embeddings), files.get("npz_key"), column=files.get("embeddings_column")
            )
            if id_column is not None and ids is None:
                ids = source.path
        else:
            if files or id_column is not None:
                raise TypeError("npz_key, embeddings_column and id_column only apply to files")
            source = ArraySource(embeddings)
        result = assign(
            self.event_store,
            self._run_id(run),
            source,
            ids=_path_or(ids),
            id_column=id_column,
            **options,
        )
        return self._written(result.run_id)

    # ------------------------------------------------------------------ helpers

    def _run_id(self, run: RunRef) -> UUID:
        if isinstance(run, Run):
            return run.run_id
        return self.event_store.resolve_run(run)

    def _written(self, run_id: UUID) -> Run:
        ensure_read_models(self.event_store, warn=self._warn)
        return self.run(run_id)


_FILE_OPTIONS = ("npz_key", "embeddings_column", "id_column")


def _path_or(ids: Any) -> Any:
    """A path as ``Path`` (``clustering`` tells files from arrays by type)."""
    return Path(os.fspath(ids)) if isinstance(ids, str | os.PathLike) else ids


def _read_model_check() -> ReadModelCheck:
    """The projections' check of a run's read-model rows against its log, for ``verify``."""
    from clusterstore import projections
    from clusterstore.audit import ReadModelCheck

    return ReadModelCheck(
        projections.read_model_digest,
        projections.first_read_model_difference,
        projections.projected_run,
    )

"""Clustering runs: from an embeddings input to a completed, resumable run in the log.

    result = cluster_file(store, "emb.npy", ClusterSettings(model="all-MiniLM-L6-v2", k=100))

1. Everything is checked before anything is written: the input's format, dtype and shape,
   the settings (``1 <= k <= n`` ...), the ids (count, syntax, uniqueness), and then, in one
   streamed pass, every value (finite as float32; no all-zero row for spherical k-means),
   while the same pass computes the input digest. Where single rows read cheaply (an array,
   a ``.npy`` file) the pass runs on a background thread while this one reads the training
   rows, trains, and starts assigning (the labels wait in memory, up to ``AHEAD_BYTES``);
   otherwise the pass also copies out the training sample and training follows it.
2. ``RunStarted`` records the model, k, seed, input path and digest, ids digest, training
   size, faiss version and thread count: only once the pass has found every value good.
   Training runs on ``min(n, k * train_per_centroid)`` rows chosen by a seeded generator.
3. ``CentroidsComputed`` is appended before any assignment: a resume never retrains.
4. Rows are assigned and appended by ``assign.Assigning``: chunks on a worker thread,
   batches of ``batch_size`` on this one.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from clusterstore.eventstore.errors import InputError
from clusterstore.eventstore.events import RunCompleted
from clusterstore.eventstore.runs import (
    DEFAULT_BATCH_SIZE,
    RunWriter,
    read_progress,
    start_run,
)
from clusterstore.eventstore.store import EventStore
from clusterstore.eventstore.vocabulary import duration_s, median, timestamp

from .assign import Assigning, assign_and_write
from .files import load_ids, open_source
from .ids import IdArray, as_ids, check_unique, derived_ids, ids_digest
from .inputs import EmbeddingSource, default_chunk_rows, read_rows, scan
from .kmeans import MAX_SEED, MIN_POINTS_PER_CENTROID, Assigner, Trained, faiss_version, train
from .report import Reporter, SilentReporter

ALGORITHMS = {False: "kmeans-l2", True: "kmeans-spherical"}
DEFAULT_ITERATIONS = 25
DEFAULT_THREADS = 1
DEFAULT_TRAIN_PER_CENTROID = 256
TINY_FRACTION = 0.1  # a non-empty cluster below this fraction of the mean size is "tiny"
SCAN_CHUNK_BYTES = 16 * 1024 * 1024  # the checking pass's reads beside the assigner's chunk
AHEAD_BYTES = 32 * 1024 * 1024  # labels and distances assigned before the run is recorded


@dataclass(frozen=True)
class ClusterSettings:
    model: str
    k: int
    spherical: bool = False
    seed: int | None = None  # None: a random seed, recorded in RunStarted
    iterations: int = DEFAULT_ITERATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = DEFAULT_THREADS
    train_per_centroid: int = DEFAULT_TRAIN_PER_CENTROID
    chunk_rows: int | None = None  # None: ~64 MiB of float32 rows, 64k-256k rows


@dataclass
class ClusterResult:
    run_id: UUID
    status: str
    model: str
    algorithm: str
    k: int
    n_embeddings: int
    dim: int
    seed: int | None
    train_size: int | None
    threads: int | None
    digest: str
    cluster_sizes: list[int]
    n_written: int  # assignments this call appended
    resumed_from: int | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # this call's stages; total_s
    input_digest: str | None = None
    started_at: datetime | None = None  # RunStarted's and RunCompleted's times
    finished_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """The run's duration from the log, as ``runs show`` reports it (``timings``'
        ``total_s`` is this call's wall time, input check included)."""
        return duration_s(self.started_at, self.finished_at)

    @property
    def median_cluster_size(self) -> int | float | None:
        return median(self.cluster_sizes)

    @property
    def n_assignments(self) -> int:
        return sum(self.cluster_sizes)

    @property
    def tiny_limit(self) -> int:
        return max(2, int(TINY_FRACTION * self.n_embeddings / self.k))

    @property
    def empty_clusters(self) -> list[int]:
        return [i for i, s in enumerate(self.cluster_sizes) if s == 0]

    @property
    def tiny_clusters(self) -> list[int]:
        return [i for i, s in enumerate(self.cluster_sizes) if 0 < s < self.tiny_limit]

    def to_dict(self) -> dict[str, Any]:
        """The result in the JSON vocabulary (``eventstore.vocabulary``)."""
        timings = {k: v for k, v in self.timings.items() if k != "total_s"}
        return {
            "run_id": str(self.run_id),
            "status": self.status,
            "model": self.model,
            "algorithm": self.algorithm,
            "k": self.k,
            "n_embeddings": self.n_embeddings,
            "dim": self.dim,
            "seed": self.seed,
            "n_train": self.train_size,
            "threads": self.threads,
            "n_assignments": self.n_assignments,
            "n_noise": 0,  # k-means labels every row
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
            "duration_s": self.duration_s,
            "input_digest": self.input_digest,
            "assignment_digest": self.digest,
            "cluster_sizes": list(self.cluster_sizes),
            "median_cluster_size": self.median_cluster_size,
            "empty_clusters": self.empty_clusters,
            "tiny_clusters": self.tiny_clusters,
            "tiny_limit": self.tiny_limit,
            "n_appended": self.n_written,
            "resumed_from": self.resumed_from,
            "warnings": list(self.warnings),
            "timings": timings,
            "elapsed_s": self.timings.get("total_s"),
        }


# ---------------------------------------------------------------- new runs


def cluster_file(
    store: EventStore,
    path: str | Path,
    settings: ClusterSettings,
    *,
    ids: str | Path | None = None,
    npz_key: str | None = None,
    embeddings_column: str | None = None,
    id_column: str | None = None,
    reporter: Reporter | None = None,
) -> ClusterResult:
    """Cluster the embeddings in a ``.npy``/``.npz``/``.parquet`` file (ids from ``ids``, from
    ``id_column`` of the parquet file, or derived)."""
    source = open_source(path, npz_key, column=embeddings_column)
    if id_column is not None:
        if source.path is None or source.path.suffix.lower() != ".parquet":
            raise InputError("--id-column only applies to .parquet inputs")
        ids = ids or source.path
    return cluster(store, source, settings, ids=ids, id_column=id_column, reporter=reporter)


def cluster(
    store: EventStore,
    source: EmbeddingSource,
    settings: ClusterSettings,
    *,
    ids: str | Path | npt.ArrayLike | None = None,
    id_column: str | None = None,
    reporter: Reporter | None = None,
) -> ClusterResult:
    """Validate, record RunStarted, train, record the centroids, assign and write, complete."""
    rep = reporter or SilentReporter()
    t_start = time.perf_counter()
    n, k = source.n, settings.k
    _check_settings(settings, n)
    id_array, ids_path = _load_ids(ids, n, id_column)
    seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
    chunk_rows = settings.chunk_rows or default_chunk_rows(source.dim)
    train_size = min(n, k * settings.train_per_centroid)
    warnings = _size_warnings(n, k, train_size)  # said once the input is accepted
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if train_size == n else np.sort(rng.choice(n, train_size, replace=False))

    t0 = time.perf_counter()
    with ExitStack() as stack:
        with rep.stage("checking input", n) as tick:
            if source.random_access:
                digest, trained, assigning = _check_while_training(
                    stack, source, settings, rows, seed, chunk_rows, tick
                )
            else:
                scanned = scan(
                    source,
                    chunk_rows=chunk_rows,
                    sample_rows=rows,
                    spherical=settings.spherical,
                    on_rows=tick,
                )
                digest, trained, assigning = scanned.digest, None, None
        timings = {"validate_s": time.perf_counter() - t0}
        for message in warnings:  # not before a refusal: that is one line
            rep.warn(message)
        if trained is None:  # trained after the check (an input read forward only)
            assert scanned.sample is not None
            with rep.stage("training", 1) as tick:
                trained = _train(scanned.sample, settings, seed)
                tick(1)
            del scanned
        params: dict[str, Any] = {
            "iterations": settings.iterations,
            "train_per_centroid": settings.train_per_centroid,
            "distance": "cosine" if settings.spherical else "squared_l2",
            "batch_size": settings.batch_size,
            "chunk_rows": chunk_rows,
            "npz_key": source.npz_key,
            "embeddings_column": getattr(source, "column", None),
            "id_column": id_column,
            "ids": "derived" if id_array is None else "given",
            "ids_path": None if ids_path is None else str(ids_path.resolve()),
            "warnings": warnings,
        }
        writer = start_run(
            store,
            model=settings.model,
            algorithm=ALGORITHMS[settings.spherical],
            n_embeddings=n,
            dim=source.dim,
            k=k,
            seed=seed,
            params=params,
            input_digest=digest,
            batch_size=settings.batch_size,
            input_path=None if source.path is None else str(source.path.resolve()),
            ids_digest=None if id_array is None else ids_digest(id_array),
            train_size=train_size,
            faiss_version=faiss_version(),
            threads=settings.threads,
        )
        with writer:
            timings["train_s"] = trained.seconds
            writer.record_centroids(
                trained.centroids,
                objective=trained.objective,
                iterations=trained.iterations,
                train_seconds=round(trained.seconds, 3),
            )
            _resumable(writer, source, id_array, ids_path)
            if assigning is None:
                assigner = Assigner(
                    trained.centroids, spherical=settings.spherical, threads=settings.threads
                )
                assigning = stack.enter_context(
                    Assigning(source, assigner, start_row=0, chunk_rows=chunk_rows)
                )
            ids_for = _ids_for(id_array, writer.started.input_digest)
            timings.update(assigning.write(writer, ids_for, rep))
            completed = writer.complete()
    timings["total_s"] = time.perf_counter() - t_start
    return _result(writer, completed, n_written=n, timings=timings, warnings=warnings)


def _train(sample: npt.NDArray[np.float32], settings: ClusterSettings, seed: int) -> Trained:
    return train(
        sample,
        settings.k,
        spherical=settings.spherical,
        iterations=settings.iterations,
        seed=seed,
        threads=settings.threads,
    )


def _check_while_training(
    stack: ExitStack,
    source: EmbeddingSource,
    settings: ClusterSettings,
    rows: npt.NDArray[np.int64],
    seed: int,
    chunk_rows: int,
    tick: Callable[[int], None],
) -> tuple[str, Trained | None, Assigning | None]:
    """The checking pass (digest, every value) on a background thread while this thread
    reads the training rows, trains, and starts assigning chunks (up to ``AHEAD_BYTES`` of
    labels held until the run is recorded). Nothing is written before the pass has passed:
    a bad row raises its ``InputError`` here (the assigner is stopped). Training rows that
    fail the checks are never trained on (the pass then names the first bad row)."""
    checking = _Background(
        lambda: (
            scan(
                source,
                chunk_rows=max(1, SCAN_CHUNK_BYTES // source.row_bytes),
                spherical=settings.spherical,
                on_rows=tick,
            ).digest
        )
    )
    sample = read_rows(source, rows, spherical=settings.spherical)
    trained = assigning = None
    if sample is not None:
        trained = _train(sample, settings, seed)
        del sample
        assigner = Assigner(
            trained.centroids, spherical=settings.spherical, threads=settings.threads
        )
        ahead = max(2, AHEAD_BYTES // (8 * chunk_rows))  # uint32 label + float32 distance
        assigning = stack.enter_context(
            Assigning(source, assigner, start_row=0, chunk_rows=chunk_rows, ahead=ahead)
        )
        assigning.start()
    digest = checking.result()
    if trained is None:  # cannot happen: the pass checks the same rows; train now
        sample = read_rows(source, rows, spherical=settings.spherical)
        if sample is None:
            raise InputError(f"{source.label}: the training rows do not pass the input checks")
        trained = _train(sample, settings, seed)
    return digest, trained, assigning


class _Background:
    """``fn()`` on a daemon thread; ``result()`` waits for it and returns or raises."""

    def __init__(self, fn: Callable[[], str]):
        self.value: str | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = fn()
            except BaseException as e:  # raised by result() on the calling thread
                self.error = e

        self.thread = threading.Thread(target=run, name="clusterstore-check", daemon=True)
        self.thread.start()

    def result(self) -> str:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


def _check_settings(s: ClusterSettings, n: int) -> None:
    if not s.model.strip():
        raise InputError("a run needs a model name (--model)")
    if not 1 <= s.k <= n:
        raise InputError(f"k must be between 1 and the number of embeddings ({n}), got {s.k}")
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        raise InputError(f"the seed must be between 0 and {MAX_SEED}, got {s.seed}")
    for name, value in (
        ("iterations", s.iterations),
        ("batch size", s.batch_size),
        ("threads", s.threads),
        ("train-per-centroid", s.train_per_centroid),
    ):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if s.chunk_rows is not None and s.chunk_rows < 1:
        raise InputError(f"chunk rows must be at least 1, got {s.chunk_rows}")


def _load_ids(
    ids: str | Path | npt.ArrayLike | None, n: int, column: str | None = None
) -> tuple[IdArray | None, Path | None]:
    if ids is None:
        return None, None
    if isinstance(ids, str | Path):
        return load_ids(ids, n, column=column), Path(ids)
    arr = as_ids(ids)
    if arr.shape[0] != n:
        raise InputError(f"{arr.shape[0]} ids given but the embeddings have {n} rows")
    check_unique(arr, "the ids")
    return arr, None


def _size_warnings(n: int, k: int, train_size: int) -> list[str]:
    """The policy for too few points per cluster: warn (faiss only prints to stderr), run."""
    need = MIN_POINTS_PER_CENTROID * k
    if n < need:
        return [
            f"{n} embeddings for k={k} is fewer than {MIN_POINTS_PER_CENTROID} per cluster "
            f"({need}); the centroids will be poorly estimated, consider a smaller k"
        ]
    if train_size < need:
        return [
            f"training on {train_size} rows for k={k} is fewer than "
            f"{MIN_POINTS_PER_CENTROID} per cluster ({need}); raise --train-per-centroid"
        ]
    return []


def _ids_for(id_array: IdArray | None, digest: str) -> Callable[[int, int], IdArray]:
    if id_array is None:
        return lambda lo, hi: derived_ids(digest, lo, hi)
    return lambda lo, hi: id_array[lo:hi]


# ---------------------------------------------------------------- resume


def resume(
    store: EventStore,
    run: str | UUID,
    *,
    embeddings: str | Path | None = None,
    ids: str | Path | None = None,
    reporter: Reporter | None = None,
) -> ClusterResult:
    """Continue a run that stopped after its centroids were recorded: re-read the input
    (the path in RunStarted unless given), check its digest, append the missing rows."""
    rep = reporter or SilentReporter()
    t_start = time.perf_counter()
    run_id = store.resolve_run(run)
    progress, writer = read_progress(store, run_id)
    read_log_s = time.perf_counter() - t_start
    started, params = progress.started, progress.started.params
    if progress.completed is not None:
        raise InputError(f"run {run_id} is already completed; nothing to resume")
    if started.algorithm not in ALGORITHMS.values():
        raise InputError(
            f"run {run_id} (algorithm {started.algorithm!r}) was not made by "
            "`clusterstore cluster`; resume it with the code that started it"
        )
    if progress.centroids is None:
        raise InputError(
            f"run {run_id} stopped before its centroids were recorded, so it cannot be "
            "resumed; start a new run"
        )
    path = embeddings or started.input_path
    if path is None:
        raise InputError(f"run {run_id} does not record its input; pass --embeddings PATH")
    source = open_source(path, params.get("npz_key"), column=params.get("embeddings_column"))
    if (source.n, source.dim) != (started.n_embeddings, started.dim):
        raise InputError(
            f"{source.label} holds {source.n} x {source.dim} embeddings but run {run_id} "
            f"was started on {started.n_embeddings} x {started.dim}; pass its input"
        )
    id_array = _resume_ids(run_id, params, started.ids_digest, ids, source.n)
    chunk_rows = int(params.get("chunk_rows") or default_chunk_rows(source.dim))
    spherical = started.algorithm == ALGORITHMS[True]
    t0 = time.perf_counter()
    with rep.stage("checking input", source.n) as tick:
        digest = scan(source, chunk_rows=chunk_rows, spherical=spherical, on_rows=tick).digest
    timings = {"read_log_s": read_log_s, "validate_s": time.perf_counter() - t0}
    if digest != started.input_digest:
        raise InputError(
            f"{source.label} is not the input of run {run_id}: its digest {digest[:12]} "
            f"differs from the recorded {started.input_digest[:12]}; pass the original file"
        )
    start_row = progress.rows_done
    batch_size = int(params.get("batch_size") or DEFAULT_BATCH_SIZE)
    writer.resume(input_digest=digest, batch_size=batch_size)
    writer.continued_by = _resume_command(run_id, embeddings=embeddings, ids=ids)
    with writer:
        centroids = np.frombuffer(progress.centroids.centroids, dtype="<f4").reshape(
            progress.centroids.k, progress.centroids.dim
        )
        threads = started.threads or DEFAULT_THREADS
        assigner = Assigner(centroids, spherical=spherical, threads=threads)
        ids_for = _ids_for(id_array, started.input_digest)
        timings.update(
            assign_and_write(
                writer,
                source,
                ids_for,
                assigner,
                start_row=start_row,
                chunk_rows=chunk_rows,
                reporter=rep,
            )
        )
        completed = writer.complete()
    timings["total_s"] = time.perf_counter() - t_start
    return _result(
        writer,
        completed,
        n_written=source.n - start_row,
        timings=timings,
        warnings=list(params.get("warnings") or []),
        resumed_from=start_row,
    )


def _resumable(
    writer: RunWriter, source: EmbeddingSource, id_array: IdArray | None, ids_path: Path | None
) -> None:
    """Once the centroids are recorded, a run stopped by a full disk is resumed: its error
    says how (``RunWriter.continued_by``), with placeholders for an input given in memory."""
    writer.continued_by = _resume_command(
        writer.run_id,
        embeddings=None if source.path is not None else "PATH",
        ids=None if id_array is None or ids_path is not None else "PATH",
    )


def _resume_command(run_id: UUID, *, embeddings: str | Path | None, ids: str | Path | None) -> str:
    """How a run stopped by a full disk goes on (``RunWriter.continued_by``): the resume,
    with the input and ids paths it must be given (None: the ones the run recorded)."""
    words = ["clusterstore", "runs", "resume", str(run_id)]
    words += [] if embeddings is None else ["--embeddings", str(embeddings)]
    words += [] if ids is None else ["--ids", str(ids)]
    return f"`{shlex.join(words)}`"


def _resume_ids(
    run_id: UUID, params: dict[str, Any], digest: str | None, ids: str | Path | None, n: int
) -> IdArray | None:
    if params.get("ids") != "given":
        if ids is not None:
            raise InputError(f"run {run_id} derived its ids from the input; --ids does not apply")
        return None
    path = ids or params.get("ids_path")
    if path is None:
        raise InputError(f"run {run_id} was given its ids in memory; pass --ids PATH")
    id_array = load_ids(path, n, column=params.get("id_column"))
    if digest and ids_digest(id_array) != digest:
        raise InputError(f"{Path(path).name} is not the ids file run {run_id} was started with")
    return id_array


def _result(
    writer: RunWriter,
    completed: RunCompleted,
    *,
    n_written: int,
    timings: dict[str, float],
    warnings: list[str],
    resumed_from: int | None = None,
) -> ClusterResult:
    s = writer.started
    return ClusterResult(
        run_id=writer.run_id,
        status="completed",
        model=s.model,
        algorithm=s.algorithm,
        k=s.k,
        n_embeddings=s.n_embeddings,
        dim=s.dim,
        seed=s.seed,
        train_size=s.train_size,
        threads=s.threads,
        digest=completed.digest,
        cluster_sizes=list(completed.cluster_sizes),
        n_written=n_written,
        resumed_from=resumed_from,
        warnings=warnings,
        timings={key: round(value, 3) for key, value in timings.items()},
        input_digest=s.input_digest,
        started_at=s.started_at,
        finished_at=completed.finished_at,
    )

"""Assigning rows to centroids and appending them, overlapped.

Rows are assigned in chunks aligned to multiples of ``chunk_rows`` (a resume recomputes
exactly the chunks of the original run, so its labels and distances are bit-identical) by
a worker thread, while the calling thread appends the assignments in batches of exactly
``batch_size`` rows (faiss and the database drivers release the GIL, so the two overlap on
two cores). Memory: the chunk buffer(s) of the source and at most two chunks of labels and
distances in the queue; labels never accumulate in Python lists.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from clusterstore.eventstore.runs import RunWriter

from .ids import IdArray
from .inputs import EmbeddingSource
from .kmeans import Assigner
from .report import Reporter

_DONE = object()


def assign_and_write(
    writer: RunWriter,
    source: EmbeddingSource,
    ids_for: Callable[[int, int], IdArray],
    assigner: Assigner,
    *,
    start_row: int,
    chunk_rows: int,
    reporter: Reporter,
) -> dict[str, float]:
    """Assign rows ``start_row ..`` on a worker thread while this thread appends them."""
    with Assigning(source, assigner, start_row=start_row, chunk_rows=chunk_rows) as assigning:
        return assigning.write(writer, ids_for, reporter)


class Assigning:
    """Rows ``start_row ..`` assigned chunk by chunk on a worker thread (from ``start``,
    or the first ``write``), at most ``ahead`` chunks of labels and distances ahead of the
    writer: started before the run is, it computes while the input is still being checked,
    and ``write`` then appends what it has. Leaving the ``with`` block stops the worker."""

    def __init__(
        self,
        source: EmbeddingSource,
        assigner: Assigner,
        *,
        start_row: int,
        chunk_rows: int,
        ahead: int = 2,
    ):
        self.source = source
        self.assigner = assigner
        self.start_row = start_row
        self.chunk_rows = chunk_rows
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self.stopping = threading.Event()
        self.busy = {"assign_s": 0.0, "write_s": 0.0}
        self.worker = threading.Thread(target=self._produce, name="clusterstore-assign")
        self.worker.daemon = True

    def __enter__(self) -> Assigning:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        while self.worker.is_alive():  # unblock a pending put, then let the worker end
            while not self.chunks.empty():
                self.chunks.get_nowait()
            self.worker.join(timeout=0.05)

    def start(self) -> None:
        if self.worker.ident is None and self.start_row < self.source.n:
            self.worker.start()

    def _produce(self) -> None:
        chunks, stop, start_row = self.chunks, self.stopping, self.start_row
        try:
            t = time.perf_counter()
            for lo, x, _ in self.source.chunks(start_row, chunk_rows=self.chunk_rows):
                labels, dist = self.assigner.assign(x)
                cut = max(0, start_row - lo)
                self.busy["assign_s"] += time.perf_counter() - t
                if not _put(chunks, (lo + cut, labels[cut:], dist[cut:]), stop):
                    return
                t = time.perf_counter()
            _put(chunks, _DONE, stop)
        except BaseException as e:  # handed to the writing thread, which re-raises it
            _put(chunks, e, stop)

    def write(
        self, writer: RunWriter, ids_for: Callable[[int, int], IdArray], reporter: Reporter
    ) -> dict[str, float]:
        """Append every assigned row to ``writer`` in batches of its batch size."""
        if self.start_row >= self.source.n:
            return {"assign_s": 0.0, "write_s": 0.0, "assign_write_s": 0.0}
        batches = _Batcher(writer.batch_size)
        busy = self.busy
        t0 = time.perf_counter()
        with reporter.stage("assigning and writing", self.source.n - self.start_row) as tick:
            writer.on_progress = tick
            self.start()
            try:
                while (item := self.chunks.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise item
                    lo, labels, dist = item
                    t = time.perf_counter()
                    for block in batches.add(ids_for(lo, lo + labels.shape[0]), labels, dist):
                        writer.record(*block)
                    busy["write_s"] += time.perf_counter() - t
                t = time.perf_counter()
                for block in batches.rest():
                    writer.record(*block)
                busy["write_s"] += time.perf_counter() - t
            finally:
                writer.on_progress = None
        return {**busy, "assign_write_s": time.perf_counter() - t0}


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Batcher:
    """Regroups chunks of rows into blocks whose length is a multiple of the batch size, so
    every append but the last holds exactly ``size`` rows, whatever the chunk size."""

    def __init__(self, size: int):
        self.size = size
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0

    def add(self, ids: np.ndarray, labels: np.ndarray, dist: np.ndarray) -> Iterator[tuple]:
        self.parts.append((ids, labels, dist))
        self.count += labels.shape[0]
        if self.count < self.size:
            return
        joined = self._join()
        full = self.count // self.size * self.size
        yield tuple(a[:full] for a in joined)
        self.parts = [tuple(a[full:] for a in joined)] if full < self.count else []  # type: ignore[list-item]
        self.count -= full

    def rest(self) -> Iterator[tuple]:
        if self.count:
            yield self._join()
        self.parts, self.count = [], 0

    def _join(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.parts) == 1:
            return self.parts[0]
        ids, labels, dist = zip(*self.parts, strict=True)
        return np.concatenate(ids), np.concatenate(labels), np.concatenate(dist)

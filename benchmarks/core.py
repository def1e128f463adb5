"""What every benchmark step shares: its result, the skip signal, the clock.

A step is a plain function ``(backend, n, db_url) -> Measurement``: it prepares its inputs
and its schema outside the clock, times only the work being compared, and returns how many
events (rows) it wrote or projected in how many seconds. The runner calls it in a fresh
child process per repetition, so the peak RSS it reports is the step's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clusterstore.eventstore.errors import EventStoreError

BATCH = 100_000  # events per append / per transaction, on every path that batches


class StepFailed(EventStoreError):
    """A step's process failed; the report says so in the step's ``error`` and the other
    steps still run (their figures are kept), then the command exits 1."""


class StepSkipped(Exception):
    """A step that cannot run here (a missing package, a plug-in not wired yet); its
    reason is reported instead of a rate."""


@dataclass
class Measurement:
    events: int
    seconds: float  # wall-clock time on the clock
    note: str = ""
    cpu_seconds: float | None = None  # this process's CPU time on the clock


class Clock:
    """Accumulates the wall-clock and CPU time spent inside ``running()`` blocks. The CPU
    time is this process's only: on SQLite that is all the work (a cross-check that a busy
    machine disturbs less), on PostgreSQL the server's share is missing."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu

    def measurement(self, events: int, note: str = "") -> Measurement:
        return Measurement(events, self.seconds, note, self.cpu_seconds)


Step = Callable[[str, int, str], Measurement]


def batches(n: int, size: int = BATCH) -> Iterator[tuple[int, int]]:
    """(lo, hi) bounds of consecutive batches covering ``range(n)``."""
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


def require(module: str, why: str) -> None:
    """Raise ``StepSkipped`` when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise StepSkipped(f"the {module!r} package is not installed ({why})")

"""Steps for the bench runner tests, imported by name in the runner's child process."""

from __future__ import annotations

from clusterstore.benchmarks.core import Measurement, StepSkipped


def fixed(backend: str, n: int, db_url: str) -> Measurement:
    return Measurement(n, 0.5, note="fake")


def skip(backend: str, n: int, db_url: str) -> Measurement:
    raise StepSkipped("not wired: a test plug-in")


def boom(backend: str, n: int, db_url: str) -> Measurement:
    raise RuntimeError("the step broke")

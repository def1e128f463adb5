"""Where a run reports its stages and warnings (progress bars in the CLI, nothing in a
library call). Below ``runner`` and ``assign``, which both use it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Tick = Callable[[int], None]


class Reporter(Protocol):
    """Where a run reports its stages (progress bars in the CLI) and its warnings."""

    def stage(self, name: str, total: int) -> AbstractContextManager[Tick]: ...

    def warn(self, message: str) -> None: ...


class SilentReporter:
    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Tick]:
        yield lambda n: None

    def warn(self, message: str) -> None:
        pass

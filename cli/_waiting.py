"""The notice a command prints while it waits for another process's lock (``waiting``).

Only on a terminal, and never with ``--quiet`` (or ``--json``): one line on stderr, rewritten
in place every second, ended when the wait is over.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

import click


class TerminalWaitNotice:
    """A ``WaitNotifier`` that writes ``waiting for ... (N s, gives up after B s) ...``."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.shown = False
        self._lock = threading.Lock()

    def waiting(self, what: str, waited: float, bound: float) -> None:
        with self._lock:
            self.stream.write(
                f"\rwaiting for {what} ({waited:.0f} s; gives up after {bound:g} s) ..."
            )
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\n")
                self.stream.flush()
                self.shown = False


def wait_notice() -> TerminalWaitNotice | None:
    """The notice for the running command: None when stderr is not a terminal or the
    command was given ``--quiet`` or ``--json``."""
    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    if params.get("quiet") or params.get("as_json"):
        return None
    stream = sys.stderr
    if not stream.isatty():
        return None
    return TerminalWaitNotice(stream)

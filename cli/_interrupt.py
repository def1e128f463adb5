"""Ctrl-C: one ``Error:`` line and exit code 130, never click's bare ``Aborted!``.

130 is 128 + SIGINT, what a shell reports for a command that Ctrl-C stopped, so a script can
tell an interrupted command from a failed one (exit 1). The line says what the interruption
left, where a command knows it: a run stopped mid-write names the run and how to resume it
(``RunInterrupted``), a run stopped in its projection step says it is stored, an output file
says it was not written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

SIGINT_EXIT = 130
INTERRUPTED = "interrupted (Ctrl-C)"


class Interrupted(click.ClickException):
    """Ctrl-C stopped the command: ``Error: ...`` and exit code 130."""

    exit_code = SIGINT_EXIT


def interrupted(e: KeyboardInterrupt) -> Interrupted:
    """The CLI's form of a ``KeyboardInterrupt`` (its message, if it carries one)."""
    return Interrupted(str(e) or INTERRUPTED)


@contextmanager
def says_on_interrupt(what: str) -> Iterator[None]:
    """Ctrl-C inside the block is ``Error: interrupted (Ctrl-C); <what>``."""
    try:
        yield
    except KeyboardInterrupt as e:
        raise Interrupted(f"{INTERRUPTED}; {what}") from e


def output_left(output: str) -> str:
    """What an interrupted ``-o`` leaves: a file is never written part-way
    (``audit.output_file``); standard output may have received part of the data."""
    if output == "-":
        return "what was written to standard output is incomplete"
    return f"nothing was written to {output}"

"""Options shared by every command, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress bars or chatter; errors still go to stderr."
)


def output_options(f: F) -> F:
    """``--json`` and ``--quiet`` together."""
    return json_option(quiet_option(f))

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


def texts_options(f: F) -> F:
    """``--texts FILE --text-column C --id-column I``: texts for embedding ids."""
    f = click.option(
        "--id-column",
        default="id",
        show_default=True,
        metavar="I",
        help="The column of --texts holding embedding ids (UUIDs).",
    )(f)
    f = click.option(
        "--text-column",
        default="text",
        show_default=True,
        metavar="C",
        help="The column of --texts holding the texts.",
    )(f)
    return click.option(
        "--texts",
        metavar="FILE",
        help="A CSV or Parquet file mapping embedding ids to texts (shown beside members).",
    )(f)

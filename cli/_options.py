"""Options shared by every command, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Integer options are bounded, so an absurd value is a usage error, never an OverflowError
# deep in numpy, faiss or the driver: counts fit a C int, sequences a 64-bit key.
MAX_COUNT = 2**31 - 1
MAX_SEQ = 2**63 - 1

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

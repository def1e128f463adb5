"""clusterstore: an event-sourced, append-only store for clustering runs.

The installed package is this one; its subpackages are the repository's top-level folders
(``eventstore/``, ``projections/``, ``clustering/``, ``audit/``, ``legacy/``, ``cli/``,
``benchmarks/``), mapped in by ``pyproject.toml`` (``[tool.setuptools.package-dir]``) and,
for tools that read the source tree (pytest, mypy, editors), by the symlinks beside this file.
"""

from clusterstore.eventstore import __version__

__all__ = ["__version__"]

"""clusterstore: an event-sourced, append-only store for clustering runs.

    import clusterstore

    with clusterstore.open("runs.db") as store:          # or a postgresql:// URL
        run = store.cluster(x, model="all-MiniLM-L6-v2", k=8, seed=1)
        ids, clusters, distances = store.labels(run)

The names below are the public API (the README's "Using it from Python" shows each verb);
every expected failure is an ``EventStoreError``. The installed package is this one; its
subpackages are the repository's top-level folders (``eventstore/``, ``projections/``,
``clustering/``, ``audit/``, ``legacy/``, ``cli/``, ``benchmarks/``), mapped in by
``pyproject.toml`` (``[tool.setuptools.package-dir]``) and, for tools that read the source
tree (pytest, mypy, editors), by the symlinks beside this file.
"""

from clusterstore.audit import Comparison, ExportResult, VerifyReport
from clusterstore.eventstore import (
    AmbiguousRunError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    EventStoreError,
    IncompleteRunError,
    InputError,
    OutputFileError,
    ReadOnlyDatabaseError,
    RunNotFoundError,
    SchemaError,
    __version__,
)

from ._run import Run
from ._store import ReadModelWarning, Store
from ._store import open_store as open

__all__ = [
    "AmbiguousRunError",
    "Comparison",
    "ConcurrencyError",
    "ConfigurationError",
    "DatabaseBusyError",
    "DatabaseUnavailableError",
    "EventStoreError",
    "ExportResult",
    "IncompleteRunError",
    "InputError",
    "OutputFileError",
    "ReadModelWarning",
    "ReadOnlyDatabaseError",
    "Run",
    "RunNotFoundError",
    "SchemaError",
    "Store",
    "VerifyReport",
    "__version__",
    "open",
]

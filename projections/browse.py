"""Browsing the store with the tools SQLite users have (Datasette, sqlite-utils).

The read models are views (``embeddingcluster``, ``clustersize``, ``clusteringresult``);
everything else is internal: the log (``cs_*``) and the read models' generation tables,
checkpoints, locks and settings (``pj_*``). ``datasette_metadata`` gives Datasette's
metadata for a store: every internal table hidden, the views described, so Datasette opens
on the read models (``datasette store.db --metadata metadata.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from clusterstore.eventstore.store import EventStore

INTERNAL_PREFIXES = ("cs_", "pj_")
VIEWS = {
    "clusteringresult": "One row per run: model, algorithm, k, counts, status, timings.",
    "embeddingcluster": "Which cluster each embedding is in, per completed run "
    "(the legacy SQLModel columns plus run_id, seq, cluster, distance).",
    "clustersize": "Each cluster's size and centroid (float32 little-endian), per completed run.",
}


def internal_tables(store: EventStore) -> list[str]:
    """The store's internal tables (the log and the read models' storage), sorted."""
    with store.transaction() as conn:
        names = inspect(conn).get_table_names()
    return sorted(n for n in names if n.startswith(INTERNAL_PREFIXES))


def datasette_metadata(store: EventStore, database: str | None = None) -> dict[str, Any]:
    """Datasette metadata for the store: internal tables hidden, the read models described.
    ``database``: Datasette's name for it (default: the SQLite file's stem)."""
    if database is None:
        files = store.local_files()
        database = Path(files[0]).stem if files else "clusterstore"
    tables: dict[str, Any] = {name: {"hidden": True} for name in internal_tables(store)}
    tables.update({view: {"description": text} for view, text in VIEWS.items()})
    return {
        "title": "clusterstore",
        "description": "Clustering runs: the read models are the views; the log (cs_*) and "
        "the read models' storage (pj_*) are hidden.",
        "databases": {database: {"tables": tables}},
    }

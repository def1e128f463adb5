"""Read models built from the log: checkpointed catch-up, follow, and zero-downtime rebuild.

    from clusterstore import projections
    projections.catch_up_all(store)             # bring every read model up to date
    projections.read_model_digest(store, run)   # (rows, sha256) of a run in embeddingcluster

Read models: ``clusteringresult`` (one row per run), ``embeddingcluster`` (legacy-compatible
assignments of completed runs) and ``clustersize`` (cluster sizes and centroids), all views
over generation tables that a rebuild replaces atomically (see ``runner``). A run with an
event that does not decode is skipped from there on and recorded, never stopping the other
runs (``dead_letter``; ``dead_letters`` lists them).
"""

from .alongside import alongside
from .base import Checkpoint, Projection
from .browse import datasette_metadata, internal_tables
from .clusteringresult import projected_run
from .dead_letter import DeadLetter, dead_letters
from .embeddingcluster import first_read_model_difference, read_model_digest
from .ids import assignment_id, cluster_id
from .lag import Behind, read_models_behind
from .lookup import Placement, WhichResult, lookup_index_state, set_lookup_index, which
from .runner import (
    NAMES,
    PROJECTIONS,
    ProjectionStatus,
    RebuildResult,
    catch_up,
    catch_up_all,
    follow,
    rebuild,
    status,
)

__all__ = [
    "NAMES",
    "PROJECTIONS",
    "Behind",
    "Checkpoint",
    "DeadLetter",
    "Placement",
    "Projection",
    "ProjectionStatus",
    "RebuildResult",
    "WhichResult",
    "alongside",
    "assignment_id",
    "catch_up",
    "catch_up_all",
    "cluster_id",
    "datasette_metadata",
    "dead_letters",
    "first_read_model_difference",
    "follow",
    "internal_tables",
    "lookup_index_state",
    "projected_run",
    "read_model_digest",
    "read_models_behind",
    "rebuild",
    "set_lookup_index",
    "status",
    "which",
]

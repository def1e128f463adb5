"""Auditing run history: summaries, verification, comparison, export, readable events.

Everything here reads the log (``eventstore``) and never writes it. The CLI commands
``clusterstore runs list/show/events/verify/compare`` and ``clusterstore export`` are thin
layers over these functions.
"""

from .compare import Comparison, Match, Overlap, compare_labels, compare_runs, load_labels
from .details import RunDetails, run_details
from .events_json import EventsResult, event_json, event_type_codes, write_events
from .export import FORMATS, ExportResult, export_format, export_run
from .labels import run_labels
from .members import ClusterStats, Member, RunClusters, cluster_members, run_clusters
from .output_file import open_output
from .report import ReportResult, model_history, write_report
from .summary import (
    STATUSES,
    RunSummary,
    Status,
    id_digits,
    list_runs,
    parse_status,
    short_id,
    summarize_run,
    summarize_runs,
    unique_prefix_length,
)
from .texts import TextsSource
from .verify import Finding, ReadModelCheck, VerifyReport, verify_run, verify_runs

__all__ = [
    "FORMATS",
    "STATUSES",
    "ClusterStats",
    "Comparison",
    "EventsResult",
    "ExportResult",
    "Finding",
    "Match",
    "Member",
    "Overlap",
    "ReadModelCheck",
    "ReportResult",
    "RunClusters",
    "RunDetails",
    "RunSummary",
    "Status",
    "TextsSource",
    "VerifyReport",
    "cluster_members",
    "compare_labels",
    "compare_runs",
    "event_json",
    "event_type_codes",
    "export_format",
    "export_run",
    "id_digits",
    "list_runs",
    "load_labels",
    "model_history",
    "open_output",
    "parse_status",
    "run_clusters",
    "run_details",
    "run_labels",
    "short_id",
    "summarize_run",
    "summarize_runs",
    "unique_prefix_length",
    "verify_run",
    "verify_runs",
    "write_events",
    "write_report",
]

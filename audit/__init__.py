"""Auditing run history: summaries, verification, comparison, export, readable events.

Everything here reads the log (``eventstore``) and never writes it. The CLI commands
``clusterstore runs list/show/events/verify/compare`` and ``clusterstore export`` are thin
layers over these functions.
"""

from .compare import Comparison, Overlap, compare_labels, compare_runs, load_labels
from .details import RunDetails, run_details
from .events_json import EventsResult, event_json, event_type_codes, write_events
from .export import FORMATS, ExportResult, export_format, export_run
from .labels import run_labels
from .output_file import open_output
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
from .verify import Finding, ReadModelCheck, VerifyReport, verify_run, verify_runs

__all__ = [
    "FORMATS",
    "STATUSES",
    "Comparison",
    "EventsResult",
    "ExportResult",
    "Finding",
    "Overlap",
    "ReadModelCheck",
    "RunDetails",
    "RunSummary",
    "Status",
    "VerifyReport",
    "compare_labels",
    "compare_runs",
    "event_json",
    "event_type_codes",
    "export_format",
    "export_run",
    "id_digits",
    "list_runs",
    "load_labels",
    "open_output",
    "parse_status",
    "run_details",
    "run_labels",
    "short_id",
    "summarize_run",
    "summarize_runs",
    "unique_prefix_length",
    "verify_run",
    "verify_runs",
    "write_events",
]

"""One JSON vocabulary for every command: key names, value formats, one median, one duration.

Every ``--json`` output (and every ``to_json``/``to_dict`` that feeds one) uses the keys in
``KEYS`` with the value formats below, so the same thing has the same name everywhere:

- timestamps are RFC 3339 in UTC with a ``Z`` (``timestamp``);
- durations are seconds under a key ending in ``_s`` (``duration_s`` is the run's, from the
  log); a rate per second ends in ``_per_s``;
- counts start with ``n_``; digests end in ``_digest`` (``assignment_digest`` is the
  digest over a run's assignment payloads that RunCompleted records, of the version its
  RunStarted declares (``digest``), ``input_digest`` the sha256 of the embeddings it read);
- enum values are lower-case words joined by ``_`` (``up_to_date``), never spaces.

It lives in the log layer because every layer that prints (clustering, projections, audit,
legacy, the CLI, the benchmarks) may import the log and nothing else in common.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "COMMANDS",
    "KEYS",
    "Key",
    "check_registry",
    "duration_s",
    "is_enum_value",
    "is_seconds_key",
    "markdown_table",
    "median",
    "timestamp",
]

COMMANDS: tuple[str, ...] = (
    "init",
    "demo",
    "cluster",
    "runs list",
    "runs show",
    "runs events",
    "runs verify",
    "runs compare",
    "runs resume",
    "record",
    "assign",
    "export",
    "import-legacy",
    "projections status",
    "projections catch-up",
    "projections rebuild",
    "projections lookup-index",
    "report",
    "which",
    "datasette-metadata",
    "bench",
)


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with ``Z`` and microseconds: ``2026-11-30T03:51:47.665728Z``. A naive
    datetime (events keep what they were given) is read as UTC."""
    if value is None:
        return None
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def duration_s(started_at: datetime | None, finished_at: datetime | None) -> float | None:
    """A run's duration: from RunStarted's ``started_at`` to the ``finished_at`` (or
    ``failed_at``) of the event that ended it, as the log records them; None while it runs.
    Every command reports this one figure (a resumed run's includes the pause)."""
    if started_at is None or finished_at is None:
        return None
    return (_utc(finished_at) - _utc(started_at)).total_seconds()


def median(sizes: Sequence[int]) -> int | float | None:
    """The median of the cluster sizes (empty clusters included, noise excluded): the middle
    size, or the mean of the two middle sizes when there is an even number of clusters; an
    int when it is whole. None when there are no clusters."""
    if not sizes:
        return None
    ordered = sorted(sizes)
    n = len(ordered)
    mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return int(mid) if float(mid).is_integer() else float(mid)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def is_enum_value(value: str) -> bool:
    """``up_to_date``: lower-case ASCII words joined by ``_``."""
    return bool(value) and all(c.islower() or c.isdigit() or c == "_" for c in value)


# ---------------------------------------------------------------- the keys

# Value types (every value may also be null where the meaning says so):
#   uuid, string, enum (see is_enum_value), integer, number, seconds (a number), timestamp,
#   digest (64 hex digits), boolean, list, object (its keys are vocabulary keys too),
#   map (its keys are names chosen by data: parameters, backends, event fields).
TYPES = (
    "uuid",
    "string",
    "enum",
    "integer",
    "number",
    "seconds",
    "timestamp",
    "digest",
    "boolean",
    "list",
    "object",
    "map",
)


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    meaning: str
    commands: tuple[str, ...]


_RUN = ("cluster", "runs resume", "demo", "runs list", "runs show", "record", "assign")
_CLUSTER = ("cluster", "runs resume", "demo")
_RECORDED = ("record", "assign")  # runs made by the API verbs: the same run keys
_PJ = ("projections status", "projections catch-up", "projections rebuild")

_KEYS: list[tuple[str, str, str, tuple[str, ...]]] = [
    # runs: the same keys wherever a run is described
    (
        "run_id",
        "uuid",
        "the run's id",
        (*_RUN, "runs events", "runs verify", "export", "import-legacy"),
    ),
    ("model", "string", "the embedding model's name", (*_RUN, "import-legacy")),
    ("algorithm", "string", "the clustering algorithm (kmeans-l2, kmeans-spherical, ...)", _RUN),
    ("k", "integer", "the number of clusters", (*_RUN, "import-legacy")),
    ("dim", "integer", "the embeddings' dimension", (*_CLUSTER, "runs show")),
    ("seed", "integer", "the random seed the run recorded", (*_CLUSTER, "runs show")),
    ("n_embeddings", "integer", "embeddings the run was started on", _RUN),
    (
        "n_assignments",
        "integer",
        "assignments in the run's log (import-legacy: in the runs it imports; export: written)",
        (*_RUN, "runs verify", "export", "import-legacy"),
    ),
    (
        "n_noise",
        "integer",
        "assignments labelled noise (-1): in no cluster (0 for k-means)",
        (*_RUN, "runs verify"),
    ),
    (
        "parent_run_id",
        "uuid",
        "the run whose centroids labelled this one (assign); null otherwise",
        ("record", "assign"),
    ),
    (
        "n_events",
        "integer",
        "events in the run's log (its head seq); rebuild: events replayed; bench: events per step",
        ("runs list", "runs show", "runs verify", "projections rebuild", "bench"),
    ),
    (
        "status",
        "enum",
        "running, completed or failed (running: no RunCompleted or RunFailed yet)",
        (*_RUN, "export", "import-legacy"),
    ),
    ("started_at", "timestamp", "RunStarted's time", _RUN),
    ("finished_at", "timestamp", "the time of RunCompleted or RunFailed; null while running", _RUN),
    ("duration_s", "seconds", "finished_at - started_at, from the log (null while running)", _RUN),
    (
        "error",
        "string",
        "why the run failed (RunFailed), why an event did not decode, or why a bench step "
        "failed (null: it did not)",
        ("runs list", "runs show", "runs events", "bench"),
    ),
    ("error_type", "string", "the exception type RunFailed recorded", ("runs show",)),
    (
        "problem",
        "string",
        "why the run's first or last event could not be read",
        ("runs list", "runs show"),
    ),
    ("params", "map", "the parameters RunStarted recorded", ("runs show",)),
    (
        "input_digest",
        "digest",
        "sha256 of the embeddings the run read (its input)",
        (*_CLUSTER, *_RECORDED, "runs show"),
    ),
    ("input_path", "string", "the input file RunStarted recorded", ("runs show",)),
    (
        "assignment_digest",
        "digest",
        "the digest over the run's assignment payloads in "
        "row order (version 2: chained sha256 of 16,384-row segments), as RunCompleted "
        "recorded it (null until completed)",
        (*_CLUSTER, *_RECORDED, "runs show", "runs verify"),
    ),
    (
        "computed_assignment_digest",
        "digest",
        "the same digest recomputed from the log now",
        ("runs show", "runs verify"),
    ),
    (
        "cluster_sizes",
        "list",
        "assignments per cluster, cluster 0 first (noise excluded)",
        (*_CLUSTER, *_RECORDED, "runs show"),
    ),
    (
        "median_cluster_size",
        "number",
        "the median of cluster_sizes (the mean of the two middle sizes for an even count)",
        (*_CLUSTER, "runs show"),
    ),
    ("empty_clusters", "list", "clusters with no assignment", _CLUSTER),
    ("tiny_clusters", "list", "non-empty clusters smaller than tiny_limit", _CLUSTER),
    ("tiny_limit", "integer", "a cluster below this size is tiny", _CLUSTER),
    # cluster and resume
    ("n_train", "integer", "rows the centroids were trained on", _CLUSTER),
    ("threads", "integer", "faiss threads", _CLUSTER),
    (
        "n_appended",
        "integer",
        "assignments this command appended to the log",
        _CLUSTER,
    ),
    ("resumed_from", "integer", "the row a resume started at (null for a new run)", _CLUSTER),
    ("warnings", "list", "warnings about the input or settings", _CLUSTER),
    (
        "elapsed_s",
        "seconds",
        "this command's wall-clock time (cluster: including the input "
        "check before the run started)",
        (*_CLUSTER, "export", "projections rebuild"),
    ),
    ("timings", "object", "seconds per stage of this command", _CLUSTER),
    ("read_log_s", "seconds", "reading the run's log before resuming", ("runs resume",)),
    ("validate_s", "seconds", "checking the input", _CLUSTER),
    ("train_s", "seconds", "training the centroids", (*_CLUSTER, "runs show")),
    ("assign_s", "seconds", "assigning rows to centroids", _CLUSTER),
    ("write_s", "seconds", "appending assignments", _CLUSTER),
    ("assign_write_s", "seconds", "assigning and appending, overlapped", _CLUSTER),
    # runs show
    ("centroids", "object", "CentroidsComputed's summary", ("runs show",)),
    ("objective", "number", "the k-means objective", ("runs show",)),
    ("iterations", "integer", "k-means iterations", ("runs show",)),
    ("integrity", "object", "what runs verify says of the run", ("runs show",)),
    # runs verify
    ("ok", "boolean", "every check holds", ("runs show", "runs verify")),
    (
        "missing_triggers",
        "list",
        "the log's append-only triggers that are missing (`init` restores them)",
        ("runs verify",),
    ),
    ("runs", "list", "one object per run", ("runs verify", "demo", "import-legacy")),
    ("head_seq", "integer", "the last seq read", ("runs show", "runs verify")),
    (
        "read_model",
        "enum",
        "ok, mismatch, absent or unavailable: whether the read model agrees with the log",
        ("runs show", "runs verify"),
    ),
    ("findings", "list", "one object per problem found", ("runs show", "runs verify")),
    ("seq", "integer", "a sequence number within a run", ("runs verify", "runs events")),
    (
        "kind",
        "enum",
        "the kind of finding (missing, undecodable, digest_mismatch, ...)",
        ("runs verify",),
    ),
    ("message", "string", "the finding in words", ("runs verify",)),
    # runs events
    ("type", "string", "the event type's name", ("runs events",)),
    ("version", "integer", "the event schema version", ("runs events",)),
    ("data", "map", "the event's fields, named as in the event schema", ("runs events",)),
    ("payload_hex", "string", "an undecodable event's stored bytes", ("runs events",)),
    # runs compare
    ("run_id_a", "uuid", "the first run compared", ("runs compare",)),
    ("noise", "enum", "how compare treats noise: own_class", ("runs compare",)),
    ("n_noise_a", "integer", "shared ids the first run labels noise", ("runs compare",)),
    ("n_noise_b", "integer", "shared ids the second run labels noise", ("runs compare",)),
    ("run_id_b", "uuid", "the second run compared", ("runs compare",)),
    (
        "n_shared",
        "integer",
        "embedding ids in both runs (in an overlap: in both clusters)",
        ("runs compare",),
    ),
    ("n_only_a", "integer", "ids only in run A", ("runs compare",)),
    ("n_only_b", "integer", "ids only in run B", ("runs compare",)),
    ("n_clusters_a", "integer", "clusters of A over the shared ids", ("runs compare",)),
    ("n_clusters_b", "integer", "clusters of B over the shared ids", ("runs compare",)),
    ("ari", "number", "adjusted Rand index (null without shared ids)", ("runs compare",)),
    ("nmi", "number", "normalized mutual information", ("runs compare",)),
    ("n_duplicates_a", "integer", "ids assigned more than once in A", ("runs compare",)),
    ("n_duplicates_b", "integer", "ids assigned more than once in B", ("runs compare",)),
    ("overlaps", "list", "the largest cluster-to-cluster overlaps", ("runs compare",)),
    ("cluster_a", "integer", "a cluster of A", ("runs compare",)),
    ("cluster_b", "integer", "a cluster of B", ("runs compare",)),
    ("share_of_a", "number", "n_shared / the size of cluster_a", ("runs compare",)),
    ("share_of_b", "number", "n_shared / the size of cluster_b", ("runs compare",)),
    # export, init, demo
    ("path", "string", "the file written (- for standard output)", ("export",)),
    ("format", "enum", "csv, npy or parquet", ("export",)),
    ("db_url", "string", "the store (password hidden)", ("init", "demo")),
    (
        "n_partitions",
        "integer",
        "hash partitions by run of the log and the assignments (PostgreSQL); null: none",
        ("init",),
    ),
    # import-legacy
    ("source", "string", "the legacy database", ("import-legacy",)),
    ("dry_run", "boolean", "nothing was written", ("import-legacy",)),
    ("n_results", "integer", "legacy clustering results found", ("import-legacy",)),
    ("n_imported", "integer", "results imported as new runs", ("import-legacy",)),
    ("n_resumed", "integer", "partly imported runs completed", ("import-legacy",)),
    ("n_skipped", "integer", "results already imported", ("import-legacy",)),
    ("n_failed_runs", "integer", "results imported as failed runs", ("import-legacy",)),
    (
        "n_source_changed",
        "integer",
        "partly imported results whose source changed since: skipped, with a warning each",
        ("import-legacy",),
    ),
    (
        "before_import",
        "enum",
        "new, partial, imported, conflict or changed (a partial import whose source changed "
        "since): the run in the store before this import",
        ("import-legacy",),
    ),
    # projections
    ("projections", "list", "one object per projection", _PJ),
    ("name", "string", "a projection's (or a benchmark step's) name", (*_PJ, "bench")),
    ("head", "integer", "the log's last global position", _PJ),
    (
        "generation",
        "integer",
        "the read model's generation readers see",
        ("projections status", "projections rebuild"),
    ),
    ("checkpoint", "integer", "the last global position applied", ("projections status",)),
    ("lag", "integer", "head - checkpoint: events not yet applied", ("projections status",)),
    ("state", "enum", "not_built, up_to_date, behind or ahead_of_log", ("projections status",)),
    ("updated_at", "timestamp", "when the checkpoint last moved", ("projections status",)),
    ("runner", "string", "the runner holding the projection's lock", ("projections status",)),
    ("n_applied", "integer", "events this command applied", ("projections catch-up",)),
    ("live_s", "seconds", "until readers saw the rebuilt generation", ("projections rebuild",)),
    (
        "damaged_runs",
        "list",
        "runs a projection skips from an event that does not decode on (catch-up, rebuild: "
        "those it started to skip now)",
        _PJ,
    ),
    (
        "runs_behind",
        "list",
        "finished runs missing from a read model no runner is catching up (an interrupted "
        "projection step)",
        ("projections status",),
    ),
    (
        "damage",
        "object",
        "where the read models skip the run from: the damaged event's seq, position and "
        "reason (null: not damaged)",
        ("runs list", "runs show"),
    ),
    (
        "position",
        "integer",
        "a global log position (a damaged event's)",
        (*_PJ, "runs list", "runs show"),
    ),
    (
        "reason",
        "string",
        "why an event does not decode",
        (*_PJ, "runs list", "runs show"),
    ),
    ("recorded_at", "timestamp", "when a projection started to skip the run", _PJ),
    # bench
    ("n_repeats", "integer", "repetitions asked per step", ("bench",)),
    ("backends", "list", "the backends measured", ("bench",)),
    ("results", "list", "one object per step and backend", ("bench",)),
    ("backend", "enum", "sqlite or postgres", ("bench",)),
    ("n_repetitions", "integer", "repetitions measured", ("bench",)),
    ("events_per_s", "object", "events per second: median, min, max", ("bench",)),
    ("events_per_cpu_s", "object", "events per CPU second: median, min, max", ("bench",)),
    ("step_seconds", "object", "seconds on the clock per repetition: median, min, max", ("bench",)),
    ("median", "number", "the median of the repetitions", ("bench",)),
    ("min", "number", "the smallest", ("bench",)),
    ("max", "number", "the largest", ("bench",)),
    ("peak_rss_mb", "number", "peak resident memory, MB", ("bench",)),
    ("db_mb", "number", "size on disk, MB", ("bench",)),
    ("skipped", "string", "why the step was skipped (null: it ran)", ("bench",)),
    ("note", "string", "what the step measured differently", ("bench",)),
    ("ratios", "map", "rate ratios between steps, per backend", ("bench",)),
    ("cpu_ratios", "map", "CPU-rate ratios between steps, per backend", ("bench",)),
    ("steps", "map", "what each step measures", ("bench",)),
    ("machine", "object", "where it was measured", ("bench",)),
    ("n_cpus", "integer", "CPUs", ("bench",)),
    ("platform", "string", "the operating system", ("bench",)),
    ("python", "string", "Python's version", ("bench",)),
    ("sqlite", "string", "SQLite's version", ("bench",)),
    ("postgres", "string", "PostgreSQL's version (null: not measured)", ("bench",)),
    ("packages", "map", "package versions", ("bench",)),
    ("load_avg_before", "list", "the load average before", ("bench",)),
    ("load_avg_after", "list", "the load average after", ("bench",)),
]

# The looking commands (report, which, runs show --cluster, compare's matches) reuse the
# run keys above and add these.
_LOOK = ("report", "which", "runs show")
_KEYS += [
    ("embedding_id", "uuid", "an embedding's id", ("which", "runs show")),
    ("indexed", "boolean", "answered from the lookup index (false: a scan)", ("which",)),
    ("cluster", "integer", "a cluster's label (-1: noise)", _LOOK),
    ("cluster_id", "uuid", "the cluster's id in embeddingcluster", ("which",)),
    ("distance", "number", "the distance to the cluster's centroid", _LOOK),
    ("size", "integer", "the cluster's number of members", ("runs show",)),
    ("mean_distance", "number", "mean distance of the cluster's members", ("runs show",)),
    ("min_distance", "number", "smallest distance of the cluster's members", ("runs show",)),
    ("max_distance", "number", "largest distance of the cluster's members", ("runs show",)),
    ("nearest", "list", "the members nearest the centroid", ("runs show",)),
    ("text", "string", "the member's text (--texts)", ("runs show",)),
    ("n_texts_unmatched", "integer", "texts whose id is in no assignment", _LOOK),
    ("n_bytes", "integer", "the file's size in bytes", ("report",)),
    ("generation_s", "seconds", "time to write the report", ("report",)),
    ("compared_to", "uuid", "the run compared with (--compare)", ("report",)),
    ("matches", "list", "clusters matched one to one (Hungarian)", ("runs compare",)),
    ("cluster_a", "integer", "a cluster of the first run", ("runs compare",)),
    ("cluster_b", "integer", "its match in the second run", ("runs compare",)),
    ("jaccard", "number", "shared / (size_a + size_b - shared)", ("runs compare",)),
    ("shared", "integer", "embeddings in both matched clusters", ("runs compare",)),
    ("size_a", "integer", "the first cluster's size", ("runs compare",)),
    ("size_b", "integer", "the second cluster's size", ("runs compare",)),
    ("n_changed", "integer", "shared ids not in their cluster's match", ("runs compare",)),
    ("title", "string", "Datasette's title for the store", ("datasette-metadata",)),
    ("description", "string", "Datasette's description", ("datasette-metadata",)),
    (
        "databases",
        "map",
        "Datasette metadata per database (its own format)",
        ("datasette-metadata",),
    ),
    ("lookup_index", "enum", "the lookup index: on or off", ("projections lookup-index",)),
]
_ALSO: dict[str, tuple[str, ...]] = {  # keys registered above that these commands emit too
    "run_id": ("report", "which", "runs show", *_PJ),
    "model": ("which",),
    "started_at": ("which",),
    "runs": ("which",),
    "path": ("report",),
    "warnings": ("report",),
    "seq": ("runs show", "runs list", *_PJ),
}
_KEYS = [(n, t, m, (*c, *_ALSO.get(n, ()))) for n, t, m, c in _KEYS]

KEYS: dict[str, Key] = {}
for _name, _type, _meaning, _commands in _KEYS:
    if _name in KEYS:  # registered twice: the commands add up
        _commands = (*KEYS[_name].commands, *_commands)
    KEYS[_name] = Key(
        _name, _type, _meaning if _name not in KEYS else KEYS[_name].meaning, _commands
    )


def markdown_table() -> str:
    """The README's table of the vocabulary, one row per key."""
    lines = ["| key | meaning | type | commands |", "|---|---|---|---|"]
    for key in KEYS.values():
        commands = ", ".join(f"`{c}`" for c in COMMANDS if c in key.commands)
        lines.append(f"| `{key.name}` | {key.meaning} | {key.type} | {commands} |")
    return "\n".join(lines)


def is_seconds_key(name: str) -> bool:
    """``duration_s``, ``train_s``: seconds. A rate (``events_per_s``) is not."""
    return name.endswith("_s") and "_per_" not in name


def check_registry() -> None:
    """The registry keeps its own rules (a test calls this)."""
    for key in KEYS.values():
        if key.type not in TYPES or not set(key.commands) <= set(COMMANDS):
            raise AssertionError(f"bad vocabulary entry {key}")
        if (key.type == "seconds") != is_seconds_key(key.name):
            raise AssertionError(f"{key.name}: only *_s keys hold seconds")

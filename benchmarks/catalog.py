"""What ``clusterstore bench`` measures: its steps, their groups, the ratios between them,
and which step measures each command of the CLI.

The project's rule: every user-facing command has a step, so a regression shows in the
next run. ``COMMANDS`` holds that map (a test walks the CLI's command tree against it).
A step is named by what it runs; its size is ``--n`` unless it is capped (a slow path:
the cap and why are in the step's note) or fixed (a command whose size is its own, e.g.
``demo``; ``--n`` does not apply and the note says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from .legacy import CAP as LEGACY_CAP


@dataclass(frozen=True)
class StepSpec:
    name: str
    target: str  # "module:function", imported in the child
    summary: str
    cap: int | None = None  # the largest n the step is run with
    requires: tuple[str, ...] = ()  # packages checked before any child is started
    cap_why: str = ""  # why the cap (said in the note)
    fixed: int | None = None  # the n the step always runs with (``--n`` does not apply)
    fixed_why: str = ""  # what the fixed size is (said in the note)


DEMO_N = 20_000 + 15_001 + 7_321  # ``clustering.demo.DEMO_MODELS`` (the step checks it)

_AUDIT = "clusterstore.benchmarks.audit_commands"
_PROJECTIONS = "clusterstore.benchmarks.projection_commands"
_WRITERS = "clusterstore.benchmarks.write_commands"

STEPS: dict[str, StepSpec] = {
    s.name: s
    for s in (
        StepSpec(
            "legacy",
            "clusterstore.benchmarks.legacy:run",
            "SQLModel ORM, uuid7 key per row, flush every 1,000, one commit",
            cap=LEGACY_CAP,
            requires=("sqlmodel",),
            cap_why="slow ORM path",
        ),
        StepSpec(
            "append",
            "clusterstore.benchmarks.steps:append",
            "EventStore.append, PackedEvents x 100k",
        ),
        StepSpec(
            "ceiling",
            "clusterstore.benchmarks.ceiling:run",
            "raw driver, pre-encoded rows: sqlite3 executemany / psycopg COPY write_row",
        ),
        StepSpec(
            "ceiling_replay",
            "clusterstore.benchmarks.ceiling:run_read_model",
            "raw driver, embeddingcluster-shaped rows",
        ),
        StepSpec(
            "replay",
            "clusterstore.benchmarks.plugins:replay",
            "projections.catch_up_all on a fresh read model",
        ),
        StepSpec(
            "end_to_end",
            "clusterstore.benchmarks.plugins:end_to_end",
            "cluster + record + project, 384-d, k=100",
            requires=("clustering",),
        ),
        StepSpec(
            "record",
            "clusterstore.benchmarks.api_steps:record",
            "Store.record of labels made elsewhere (5% noise) + catch-up",
        ),
        StepSpec(
            "assign",
            "clusterstore.benchmarks.api_steps:assign",
            "Store.assign to a run's 100 centroids (384-d) + catch-up",
            requires=("clustering",),
        ),
        StepSpec(
            "report",
            "clusterstore.benchmarks.audit_steps:report",
            "audit.write_report of one run (k=100): verify, statistics, members, history",
        ),
        StepSpec(
            "which",
            "clusterstore.benchmarks.audit_steps:which",
            "projections.which x 200 with the lookup index (events = lookups)",
            requires=("projections",),
        ),
        *(
            StepSpec(name, f"{_AUDIT}:{name}", summary, requires=tuple(r))
            for name, summary, *r in (
                ("verify", "runs verify RUN: log checks and the read-model check"),
                ("compare", "runs compare A B, two runs of n (events = 2n)"),
                ("export_csv", "export RUN -o run.csv"),
                ("export_npy", "export RUN -o run.npy"),
                ("export_parquet", "export RUN -o run.parquet", "pyarrow"),
                ("runs_list", "runs list with 1,000 runs in the store (events = runs)"),
                ("runs_show", "runs show RUN: what its RunCompleted recorded, no verify pass"),
                ("verify_crowded", "runs verify RUN with 10 other runs of n in the store"),
            )
        ),
        StepSpec(
            "runs_events",
            f"{_AUDIT}:runs_events",
            "runs events RUN > file: a run of n as NDJSON (events = lines)",
        ),
        StepSpec(
            "runs_resume",
            f"{_WRITERS}:runs_resume",
            "runs resume RUN: a cluster run (384-d, k=100) stopped halfway (events = rows "
            "appended)",
            requires=("clustering",),
        ),
        StepSpec(
            "catch_up",
            f"{_PROJECTIONS}:catch_up",
            "projections catch-up of a run of n appended to a store projected up to one",
        ),
        StepSpec(
            "rebuild",
            f"{_PROJECTIONS}:rebuild",
            "projections rebuild of a store holding one run of n",
        ),
        StepSpec(
            "lookup_index",
            f"{_PROJECTIONS}:lookup_index",
            "projections lookup-index on: the read model of n re-projected with ids, indexed",
        ),
        StepSpec(
            "projections_status",
            f"{_PROJECTIONS}:projections_status",
            "projections status x 20, a run of n behind (events = calls)",
        ),
        StepSpec(
            "datasette_metadata",
            f"{_PROJECTIONS}:datasette_metadata",
            "datasette-metadata x 20 on a store of one run of n (events = calls)",
        ),
        StepSpec(
            "init",
            f"{_WRITERS}:init",
            "init on a new database (events = calls)",
            fixed=1,
            fixed_why="one call on a new database",
        ),
        StepSpec(
            "demo",
            f"{_WRITERS}:demo",
            "demo: three models' synthetic embeddings clustered, recorded and projected",
            requires=("clustering",),
            fixed=DEMO_N,
            fixed_why="the demo's own three models",
        ),
        StepSpec(
            "import_legacy",
            f"{_WRITERS}:import_legacy",
            "import-legacy of the legacy step's tables holding one result of n rows",
        ),
    )
}

# Which step measures each command of the CLI (``bench`` measures the others, not itself).
# ``cluster``, ``record`` and ``assign`` are measured through the Python API they call.
COMMANDS: dict[str, tuple[str, ...]] = {
    "init": ("init",),
    "cluster": ("end_to_end",),
    "record": ("record",),
    "assign": ("assign",),
    "demo": ("demo",),
    "import-legacy": ("import_legacy",),
    "runs list": ("runs_list",),
    "runs show": ("runs_show",),
    "runs events": ("runs_events",),
    "runs verify": ("verify",),  # and verify_crowded (the group isolation)
    "runs compare": ("compare",),
    "runs resume": ("runs_resume",),
    "export": ("export_csv", "export_npy", "export_parquet"),
    "report": ("report",),
    "which": ("which",),
    "datasette-metadata": ("datasette_metadata",),
    "projections catch-up": ("catch_up",),
    "projections rebuild": ("rebuild",),
    "projections lookup-index": ("lookup_index",),
    "projections status": ("projections_status",),
}

# --steps NAME also takes a group: the steps it names
GROUPS = {
    "audit": (
        "verify",
        "compare",
        "export_csv",
        "export_npy",
        "export_parquet",
        "runs_list",
        "runs_show",
    ),
    # per-run reads against the size of the store: verify alone and among 10 other runs
    "isolation": ("verify", "verify_crowded"),
    # the `runs` subcommands
    "runs": ("runs_list", "runs_show", "runs_events", "verify", "compare", "runs_resume"),
    # the `projections` subcommands, and the full replay their ratios are taken against
    "projections": ("replay", "catch_up", "rebuild", "lookup_index", "projections_status"),
    # one step per command of the CLI (at least one for each)
    "commands": tuple(s for s in STEPS if any(s in v for v in COMMANDS.values())),
}
BACKENDS = ("sqlite", "postgres")
# name -> (numerator step, denominator step), computed on the medians, per backend
RATIOS = {
    "append_vs_legacy": ("append", "legacy"),
    "append_vs_ceiling": ("append", "ceiling"),
    "replay_vs_ceiling_replay": ("replay", "ceiling_replay"),
    "verify_crowded_vs_verify": ("verify_crowded", "verify"),
    "catch_up_vs_replay": ("catch_up", "replay"),
    "rebuild_vs_replay": ("rebuild", "replay"),
}

"""``clusterstore bench``: the shape of its output on both backends, skips, errors, and a
step for every command of the CLI.

No timing thresholds: only that every step that ran reported a positive rate.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from clusterstore.benchmarks import catalog, runner
from clusterstore.cli import bench as cli_bench
from clusterstore.cli.main import cli

from .conftest import pg_base_url, require_pg
from .test_json_vocabulary import check_document, leaf_commands

NAMES = {
    "legacy",
    "append",
    "ceiling",
    "ceiling_replay",
    "replay",
    "end_to_end",
    "record",
    "assign",
    "report",
    "which",
    "verify",
    "compare",
    "export_csv",
    "export_npy",
    "export_parquet",
    "runs_list",
    "runs_show",
    "verify_crowded",
    "runs_events",
    "runs_resume",
    "catch_up",
    "rebuild",
    "lookup_index",
    "projections_status",
    "datasette_metadata",
    "init",
    "demo",
    "import_legacy",
}
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/test"


def _bench_schemas() -> set[str]:
    engine = create_engine(pg_base_url())
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")
        ).scalars()
        found = set(names)
    engine.dispose()
    return found


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["bench", *args])
    return result


def _check_shape(report: dict[str, Any], backends: list[str], n: int) -> None:
    assert report["n_events"] == n
    results = report["results"]
    assert {(r["name"], r["backend"]) for r in results} == {
        (name, b) for name in NAMES for b in backends
    }
    for r in results:
        assert set(r) >= {"name", "backend", "n_events", "events_per_s", "peak_rss_mb", "db_mb"}
        if r["skipped"]:
            assert r["events_per_s"] is None
            continue
        for key in ("events_per_s", "events_per_cpu_s"):
            rate = r[key]
            assert 0 < rate["min"] <= rate["median"] <= rate["max"], r
        assert r["n_repetitions"] == report["n_repeats"]
        assert r["peak_rss_mb"] > 0
        assert r["db_mb"] > 0
    for name in ("legacy", "append", "ceiling", "ceiling_replay"):
        assert all(not r["skipped"] for r in results if r["name"] == name), name
    assert set(report["ratios"]) == set(backends)
    for ratios in report["ratios"].values():
        assert set(ratios) == set(runner.RATIOS)
        assert ratios["append_vs_legacy"] > 0
        assert ratios["append_vs_ceiling"] > 0
    assert set(report["cpu_ratios"]) == set(backends) & {"sqlite"}
    machine = report["machine"]
    assert machine["n_cpus"] >= 1
    assert machine["sqlite"] and machine["python"]
    assert machine["packages"]["clusterstore"]
    assert check_document("bench", report) == []


def _check_command_steps(report: dict[str, Any], n: int) -> None:
    """What the steps of the commands (beyond the audit ones) say they measured."""
    rows = {r["name"]: r for r in report["results"]}
    for name in ("runs_events", "catch_up", "rebuild", "lookup_index", "import_legacy"):
        assert rows[name]["n_events"] == n and rows[name]["events_per_s"]["median"] > 0, name
    assert rows["runs_events"]["note"].endswith(" MB of NDJSON")
    assert rows["catch_up"]["note"] == f"on top of a projected run of {n:,}"
    assert rows["projections_status"]["note"].endswith(f"; lag {n + 2:,} events")
    assert rows["datasette_metadata"]["note"].startswith("median ")
    assert rows["init"]["n_events"] == 1
    assert rows["init"]["note"] == "fixed n 1: one call on a new database; --n does not apply"
    for name, note in (
        ("demo", f"fixed n {catalog.DEMO_N:,}: the demo's own three models"),
        ("runs_resume", f"resumed at row {n // 2:,} of {n:,}; input re-read"),
    ):
        if not rows[name]["skipped"]:  # the clustering package is an extra
            assert rows[name]["note"].startswith(note), rows[name]
    for ratios in report["ratios"].values():
        assert ratios["catch_up_vs_replay"] > 0
        assert ratios["rebuild_vs_replay"] > 0


@pytest.mark.slow
@pytest.mark.not_partitioned  # the bench makes its own stores
@pytest.mark.xdist_group("bench_schemas")  # asserts on every bench_* schema of the server
def test_bench_json_on_each_backend(backend: str) -> None:
    # two repetitions, not the default three: every step still runs more than once, each
    # time on a fresh database, and the rounds alternate direction (a third only added time)
    args = ["--n", "2000", "--repeat", "2", "--json", "--backend", backend]
    before: set[str] = set()
    if backend == "postgres":
        require_pg()
        before = _bench_schemas()
        args += ["--pg-url", pg_base_url().render_as_string(hide_password=False)]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    _check_shape(report, [backend], 2000)
    _check_command_steps(report, 2000)
    if backend == "postgres":
        assert report["machine"]["postgres"]
        assert _bench_schemas() <= before  # every scratch schema was dropped


def test_unknown_step_is_a_usage_error() -> None:
    result = _invoke("--steps", "append,nope")
    assert result.exit_code == 2
    assert "unknown step nope; choose from legacy, append, ceiling" in result.output


def test_every_command_of_the_cli_has_a_step() -> None:
    """The project's rule: a command added without a step fails here."""
    commands = {name for name, _ in leaf_commands(cli)} - {"bench"}
    assert set(catalog.COMMANDS) == commands
    measured = [s for steps in catalog.COMMANDS.values() for s in steps]
    assert set(measured) <= set(runner.STEPS)
    assert set(runner.GROUPS["commands"]) == set(measured)
    assert list(runner.GROUPS["commands"]) == [s for s in runner.STEPS if s in measured]


def test_the_groups_expand_in_order() -> None:
    given = cli_bench._steps(None, None, "runs,init,projections,replay")  # type: ignore[arg-type]
    assert given == (
        "runs_list", "runs_show", "runs_events", "verify", "compare", "runs_resume", "init",
        "replay", "catch_up", "rebuild", "lookup_index", "projections_status",
    )  # fmt: skip


def test_the_audit_group_names_the_audit_commands() -> None:
    result = _invoke(
        "--backend", "sqlite", "--steps", "runs_show,audit", "--n", "300", "--repeat", "1",
        "--json", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)["results"]
    assert [r["name"] for r in results] == [
        "runs_show", "verify", "compare", "export_csv", "export_npy", "export_parquet",
        "runs_list",
    ]  # fmt: skip
    for r in results:
        assert 0 < r["step_seconds"]["min"] <= r["step_seconds"]["median"], r
        assert r["events_per_s"]["median"] > 0, r
    by_name = {r["name"]: r for r in results}
    assert by_name["compare"]["n_events"] == 300
    assert by_name["runs_list"]["note"].startswith("1,000 runs of 1 assignments")


def test_the_isolation_group_sets_verify_beside_a_crowded_store() -> None:
    result = _invoke(
        "--backend", "sqlite", "--steps", "isolation", "--n", "300", "--repeat", "1",
        "--json", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["name"] for r in report["results"]] == ["verify", "verify_crowded"]
    crowded = report["results"][1]
    assert crowded["note"].startswith("10 other runs of 300;")
    assert crowded["db_mb"] > report["results"][0]["db_mb"]
    assert report["ratios"]["sqlite"]["verify_crowded_vs_verify"] > 0


def test_postgres_asked_for_but_unreachable_is_an_error() -> None:
    result = _invoke("--backend", "postgres", "--pg-url", UNREACHABLE_PG, "--steps", "append")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: PostgreSQL is not reachable at postgresql+psycopg://postgres@127.0.0.1:1/test: "
    )


def test_unreachable_postgres_is_skipped_with_all(tmp_path: Any) -> None:
    result = _invoke(
        "--backend", "all", "--pg-url", UNREACHABLE_PG, "--steps", "append",
        "--n", "500", "--repeat", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    by_backend = {r["backend"]: r for r in json.loads(result.output)["results"]}
    assert by_backend["sqlite"]["events_per_s"]["median"] > 0
    assert by_backend["postgres"]["skipped"].startswith("PostgreSQL is not reachable at ")


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {
        "legacy": runner.StepSpec("legacy", "tests.bench_fakes:fixed", "fake", cap=300),
        "append": runner.StepSpec("append", "tests.bench_fakes:fixed", "fake"),
        "ceiling": runner.StepSpec("ceiling", "tests.bench_fakes:fixed", "fake"),
        "replay": runner.StepSpec("replay", "tests.bench_fakes:skip", "fake"),
        "end_to_end": runner.StepSpec(
            "end_to_end", "tests.bench_fakes:fixed", "fake", requires=("no_such_package_x",)
        ),
        "boom": runner.StepSpec("boom", "tests.bench_fakes:boom", "fake"),
        "init": runner.StepSpec(
            "init", "tests.bench_fakes:fixed", "fake", fixed=7, fixed_why="its own size"
        ),
    }
    monkeypatch.setattr(runner, "STEPS", fakes)


def test_runner_report_skips_caps_and_ratios(fake_steps: None) -> None:
    lines: list[tuple[str, bool]] = []
    config = runner.BenchConfig(
        n=1000, backends=["sqlite"], repeat=2, steps=["legacy", "append", "replay", "end_to_end"]
    )
    report = runner.run_bench(config, lambda text, done: lines.append((text, done)))
    rows = {r["name"]: r for r in report["results"]}
    assert rows["legacy"]["n_events"] == 300
    assert rows["legacy"]["note"].startswith("n capped at 300 of 1,000")
    assert rows["legacy"]["events_per_s"] == {"median": 600.0, "min": 600.0, "max": 600.0}
    assert rows["append"]["events_per_s"]["median"] == 2000.0
    assert rows["append"]["note"] == "fake"
    assert rows["replay"]["skipped"] == "not wired: a test plug-in"
    assert rows["replay"]["n_repetitions"] == 0  # a skip stops the repetitions
    assert rows["end_to_end"]["skipped"] == "no_such_package_x is not installed"
    assert report["ratios"] == {
        "sqlite": {
            "append_vs_legacy": 3.33,
            "append_vs_ceiling": None,
            "replay_vs_ceiling_replay": None,
            "verify_crowded_vs_verify": None,
            "catch_up_vs_replay": None,
            "rebuild_vs_replay": None,
        }
    }
    assert rows["append"]["events_per_cpu_s"] is None  # the fake step measures no CPU time
    # rounds alternate direction: legacy, append, replay, then append, legacy
    started = [text.split()[2] for text, done in lines if not done]
    assert started == ["legacy", "append", "replay", "append", "legacy"]


def test_a_fixed_step_runs_at_its_own_size(fake_steps: None) -> None:
    report = runner.run_bench(runner.BenchConfig(n=1000, backends=["sqlite"], steps=["init"]))
    (row,) = report["results"]
    assert row["n_events"] == 7
    assert row["events_per_s"]["median"] == 14.0  # the child was given n = 7
    assert row["note"] == "fixed n 7: its own size; --n does not apply; fake"


def test_a_failing_step_is_an_error_that_keeps_the_other_figures(fake_steps: None) -> None:
    result = _invoke("--backend", "sqlite", "--steps", "append,boom", "--n", "10", "--json")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: bench step boom on sqlite failed: RuntimeError: the step broke\n"
    )
    rows = {r["name"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["append"]["events_per_s"]["median"] == 20.0  # measured all the same
    assert (rows["append"]["error"], rows["boom"]["n_repetitions"]) == (None, 0)
    assert rows["boom"]["error"] == "bench step boom on sqlite failed: RuntimeError: the step broke"
    table = _invoke("--backend", "sqlite", "--steps", "boom,append", "--n", "10", "--quiet")
    assert table.exit_code == 1
    lines = table.stdout.splitlines()
    assert lines[2].split()[:2] == ["boom", "sqlite"]
    assert lines[2].endswith(
        "FAILED: bench step boom on sqlite failed: RuntimeError: the step broke"
    )
    assert lines[3].split()[:3] == ["append", "sqlite", "10"]
    assert lines[5] == "sqlite: no ratio (a step failed)"


def test_human_table(fake_steps: None) -> None:
    result = _invoke("--backend", "sqlite", "--steps", "append,replay", "--n", "10", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "step", "backend", "n", "events/s", "min", "max", "s", "(median)", "peak", "RSS", "MB",
        "DB", "MB", "note",
    ]  # fmt: skip
    assert lines[2].split()[:6] == ["append", "sqlite", "10", "20", "20", "20"]
    assert lines[3].split()[:2] == ["replay", "sqlite"]
    assert lines[3].endswith("skipped: not wired: a test plug-in")
    assert lines[5] == "sqlite: no ratio (a step was skipped)"
    assert lines[6].startswith("machine: ")


def test_human_table_without_a_pair_of_steps(fake_steps: None) -> None:
    result = _invoke("--backend", "sqlite", "--steps", "init", "--n", "10", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split()[:3] == ["init", "sqlite", "7"]
    assert lines[4] == "sqlite: no ratio (no two of these steps make one)"

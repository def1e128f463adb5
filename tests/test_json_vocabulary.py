"""One JSON vocabulary: every command's ``--json`` parses and speaks only the vocabulary of
``eventstore.vocabulary`` (registered keys, for the commands that emit them, in their value
formats); ``cluster`` and ``runs show`` agree on a run's median cluster size and duration;
the README's table is the registry's."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

from clusterstore.cli.main import cli
from clusterstore.clustering import ClusterSettings, cluster_file
from clusterstore.eventstore import EventStore
from clusterstore.eventstore import vocabulary as vocab
from tests.test_clustering_runs import FailAfter
from tests.test_legacy_import import build_legacy

README = Path(__file__).resolve().parent.parent / "README.md"
HEX64 = re.compile(r"[0-9a-f]{64}")


def run(db_url: str, *args: Any) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *map(str, args)])


def uneven_blobs(n: int, seed: int = 0) -> np.ndarray:
    """Four groups of unequal size, so the upper middle size and the median differ."""
    rng = np.random.default_rng(seed)
    centres = 8 * rng.standard_normal((4, 5))
    groups = rng.choice(4, n, p=[0.1, 0.2, 0.3, 0.4])
    return (centres[groups] + rng.standard_normal((n, 5))).astype(np.float32)


def leaf_commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


# ---------------------------------------------------------------- checking a document


def check_document(command: str, value: Any, where: str = "$") -> list[str]:
    """Problems with one ``--json`` document: unknown keys, keys another command owns,
    values not in their key's format."""
    problems: list[str] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            problems += check_document(command, item, f"{where}[{i}]")
        return problems
    if not isinstance(value, dict):
        return problems
    for name, item in value.items():
        path = f"{where}.{name}"
        key = vocab.KEYS.get(name)
        if key is None:
            problems.append(f"{command}: {path} is not a vocabulary key")
            continue
        if command not in key.commands:
            problems.append(f"{command}: {path} is not registered for this command")
        problem = check_value(key, item)
        if problem:
            problems.append(f"{command}: {path} = {item!r}: {problem}")
        if key.type in ("object", "list"):
            problems += check_document(command, item, path)
        elif key.type == "map" and isinstance(item, dict):
            problems += check_map(command, item, path)
    return problems


def check_map(command: str, value: dict[str, Any], where: str) -> list[str]:
    """A map's keys are data (event fields, parameters), but times in it are still ``Z``."""
    return [
        f"{command}: {where}.{name} = {item!r}: not a Z timestamp"
        for name, item in value.items()
        if name.endswith("_at") and item is not None and not is_timestamp(item)
    ]


def is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not value.endswith("Z"):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(key: vocab.Key, value: Any) -> str | None:
    if value is None:
        return None
    ok = {
        "uuid": lambda v: isinstance(v, str) and str(uuid.UUID(v)) == v,
        "string": lambda v: isinstance(v, str),
        "enum": lambda v: isinstance(v, str) and vocab.is_enum_value(v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": is_number,
        "seconds": is_number,
        "timestamp": is_timestamp,
        "digest": lambda v: isinstance(v, str) and HEX64.fullmatch(v) is not None,
        "boolean": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "map": lambda v: isinstance(v, dict),
    }[key.type](value)
    return None if ok else f"not a {key.type}"


def test_the_checker_catches_what_the_issue_found() -> None:
    """The old spellings fail the check (so the walk below can fail)."""
    old = {
        "run_id": str(uuid.uuid4()),
        "started_at": "2026-11-30T03:51:43.749210+00:00",
        "duration_seconds": 0.1,
        "digest": "ab" * 32,
        "n_written": 5,
        "state": "up to date",
        "train_s": "0.1",
    }
    problems = check_document("runs show", old)
    assert not any("$.run_id" in p for p in problems), problems
    for word in ("started_at", "duration_seconds", "digest", "n_written", "state", "train_s"):
        assert any(f"$.{word}" in p for p in problems), word


# ---------------------------------------------------------------- the walk


def test_every_command_offers_json_and_is_in_the_vocabulary() -> None:
    commands = dict(leaf_commands(cli))
    assert set(commands) == set(vocab.COMMANDS)
    for name, command in commands.items():
        assert "--json" in [o for p in command.params for o in p.opts], name


@pytest.fixture
def walked(store: EventStore, db_url: str, tmp_path: Path) -> dict[str, list[Any]]:
    """Every command (but bench) run with ``--json`` on one store; its documents by command."""
    out: dict[str, list[Any]] = {}

    def doc(command: str, *args: Any, code: int = 0) -> Any:
        result = run(db_url, *command.split(), *args, "--json")
        assert result.exit_code == code, (command, result.output)
        parsed = json.loads(result.stdout)
        out.setdefault(command, []).append(parsed)
        return parsed

    emb = tmp_path / "emb.npy"
    np.save(emb, uneven_blobs(600))
    doc("init")
    first = doc("cluster", emb, "--model", "m", "--k", 4, "--seed", 3)
    second = doc("cluster", emb, "--model", "m", "--k", 3, "--seed", 4, "--spherical")
    settings = ClusterSettings(model="m", k=4, seed=3, batch_size=100, chunk_rows=128)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cluster_file(store, emb, settings, reporter=FailAfter(300))
    broken = str(store.runs()[-1].run_id)
    doc("runs list")
    doc("runs show", broken)  # failed, before the resume
    doc("runs resume", broken)
    for run_id in (first["run_id"], second["run_id"], broken):
        doc("runs show", run_id)
    doc("runs verify", "--all")
    doc("runs compare", first["run_id"], second["run_id"])
    doc("export", first["run_id"], "--output", tmp_path / "a.csv")
    doc("assign", first["run_id"], emb)
    doc("report", first["run_id"], "-o", tmp_path / "report.html")
    doc("runs show", first["run_id"], "--cluster", 1, "--limit", 2)
    embedding = (tmp_path / "a.csv").read_text().splitlines()[1].split(",")[0]
    doc("projections lookup-index", "on")
    doc("which", embedding)
    doc("datasette-metadata")
    labels, ids = tmp_path / "labels.npy", tmp_path / "ids.txt"
    np.save(labels, np.array([0, 1, -1, 2, 1, -1, 0], dtype=np.int64))  # -1: noise
    ids.write_text("".join(f"{uuid.UUID(int=i + 1)}\n" for i in range(7)))
    doc("record", labels, "--ids", ids, "--model", "m", "--algorithm", "hdbscan")
    doc("projections status")
    doc("projections catch-up")
    doc("projections rebuild")
    doc("demo")
    legacy = build_legacy(f"sqlite:///{tmp_path / 'legacy.db'}")
    source = legacy.url.removeprefix("sqlite:///")
    doc("import-legacy", source, "--dry-run")
    doc("import-legacy", source)
    events = run(db_url, "runs", "events", first["run_id"], "--limit", 4, "--json")
    assert events.exit_code == 0
    assert events.stdout == run(db_url, "runs", "events", first["run_id"], "--limit", 4).stdout
    out["runs events"] = [json.loads(line) for line in events.stdout.splitlines()]
    return out


def test_every_command_speaks_the_vocabulary(walked: dict[str, list[Any]]) -> None:
    assert set(walked) == set(vocab.COMMANDS) - {"bench"}
    problems = [p for command, docs in walked.items() for p in check_document(command, docs)]
    assert problems == []


def test_cluster_and_runs_show_agree_on_a_run(
    walked: dict[str, list[Any]], db_url: str, tmp_path: Path
) -> None:
    shown = {d["run_id"]: d for d in walked["runs show"] if "nearest" not in d}  # not --cluster
    made = [*walked["cluster"], *walked["runs resume"], *walked["demo"][0]["runs"]]
    same = (
        "median_cluster_size",
        "duration_s",
        "started_at",
        "finished_at",
        "assignment_digest",
        "input_digest",
        "n_assignments",
        "cluster_sizes",
        "status",
    )
    for result in made:
        if result["run_id"] in shown:
            other = shown[result["run_id"]]
            assert {k: result[k] for k in same} == {k: other[k] for k in same}
    sizes = walked["cluster"][0]["cluster_sizes"]
    ordered = sorted(sizes)
    assert len(sizes) == 4 and ordered[2] != (ordered[1] + ordered[2]) / 2  # the case at hand
    assert walked["cluster"][0]["median_cluster_size"] == (ordered[1] + ordered[2]) / 2
    # the text outputs say the same median and duration
    emb = tmp_path / "emb.npy"
    text = run(db_url, "cluster", emb, "--model", "m", "--k", 4, "--seed", 3).stdout
    run_id = text.split()[1]
    show = run(db_url, "runs", "show", run_id).stdout
    cluster_median = re.search(r"median ([\d,.]+),", text)
    show_median = re.search(r"median ([\d,.]+),", show)
    assert cluster_median and show_median
    assert cluster_median.group(1).replace(",", "") == show_median.group(1)
    took = re.search(r"took (\S+)", text)
    finished = re.search(r"UTC \((\S+)\)", show)
    assert took and finished and took.group(1) == finished.group(1)


def test_export_to_stdout_prints_its_json_on_stderr(
    walked: dict[str, list[Any]], db_url: str
) -> None:
    run_id = walked["cluster"][0]["run_id"]
    result = run(db_url, "export", run_id, "-o", "-", "--format", "csv", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("embedding_id,cluster,distance\n")
    summary = json.loads(result.stderr)
    assert summary["path"] == "-" and summary["n_assignments"] == 600
    assert check_document("export", summary) == []


def test_bench_json_speaks_the_vocabulary() -> None:
    args = ["--n", "200", "--repeat", "1", "--backend", "sqlite", "--steps", "append"]
    as_json = CliRunner().invoke(cli, ["bench", *args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert check_document("bench", json.loads(as_json.stdout)) == []


# ---------------------------------------------------------------- the registry and README


def test_the_registry_keeps_its_rules() -> None:
    vocab.check_registry()
    for key in vocab.KEYS.values():
        if key.name.startswith("n_"):
            assert key.type == "integer", key
        if key.name.endswith("_at"):
            assert key.type == "timestamp", key
        if key.name.endswith("_digest"):
            assert key.type == "digest", key


def test_the_readme_table_is_the_registry() -> None:
    assert vocab.markdown_table() in README.read_text()


def test_formats() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert vocab.timestamp(naive) == "2026-01-02T03:04:05.000000Z"
    aware = datetime.fromisoformat("2026-01-02T05:04:05.5+02:00")
    assert vocab.timestamp(aware) == "2026-01-02T03:04:05.500000Z"
    assert vocab.duration_s(naive, aware) == 0.5
    assert vocab.duration_s(naive, None) is None
    assert vocab.median([181, 178, 200, 100]) == 179.5
    assert vocab.median([3, 1, 2]) == 2 and vocab.median([]) is None
    assert vocab.median([1, 3]) == 2 and isinstance(vocab.median([1, 3]), int)
    assert vocab.is_enum_value("up_to_date") and not vocab.is_enum_value("up to date")

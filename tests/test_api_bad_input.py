"""Bad input to ``record`` and ``assign``, from Python and from the CLI: a typed exception
(``Error: <message>`` and exit 1 from the CLI), and nothing written (every table compared)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import clusterstore
from clusterstore.cli.main import cli
from tests.api_util import blobs, every_table, uuids

IDS = uuids(4, seed=5)


@dataclass
class World:
    store: clusterstore.Store
    db: str
    dir: Path
    parent: clusterstore.Run  # k-means, dim 8
    recorded: clusterstore.Run  # labels without centroids
    prefix: str  # a prefix both runs share


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with clusterstore.open(db_url) as store:
        parent = store.cluster(blobs(200), model="m", k=3, seed=1)
        recorded = store.record(IDS, [0, 1, 1, 0], model="m", algorithm="hdbscan")
        a, b = parent.run_id.hex, recorded.run_id.hex
        common = next(i for i in range(32) if a[i] != b[i])
        yield World(store, db_url, tmp_path, parent, recorded, a[:common])


@dataclass(frozen=True)
class Case:
    call: Callable[[World], Any]
    error: type[Exception]
    message: str  # {placeholders} from World; "..." at the end: a prefix


def record(ids: Any, labels: Any, **kw: Any) -> Callable[[World], Any]:
    kw.setdefault("model", "m")
    kw.setdefault("algorithm", "x")
    return lambda w: w.store.record(ids, labels, **kw)


def assign(run: str, x: Any, **kw: Any) -> Callable[[World], Any]:
    return lambda w: w.store.assign(getattr(w, run, run), x, **kw)


BAD = clusterstore.InputError
PYTHON_CASES: dict[str, Case] = {
    "labels too short": Case(
        record(IDS, [0, 1, 1]), BAD, "3 labels given for 4 ids; give one label per id"
    ),
    "labels of floats": Case(
        record(IDS, [0.0, 1.0, 1.0, 0.0]),
        BAD,
        "labels must be integers (cluster numbers, -1 for noise), got an array of float64",
    ),
    "labels of strings": Case(
        record(IDS, ["a", "b", "a", "b"]),
        BAD,
        "labels must be integers (cluster numbers, -1 for noise), got an array of <U1",
    ),
    "labels of bools": Case(
        record(IDS, [True, False, True, True]),
        BAD,
        "labels must be integers (cluster numbers, -1 for noise), got an array of bool",
    ),
    "labels 2-D": Case(
        record(IDS, [[0], [1], [1], [0]]),
        BAD,
        "labels must be a 1-D array, one per id; got shape 4x1",
    ),
    "labels below -1": Case(
        record(IDS, [0, -1, -2, 1]), BAD, "labels row 2: -2 is below -1 (-1 marks noise)"
    ),
    "labels too large": Case(
        record(IDS, [0, 1, 1 << 20, 1]),
        BAD,
        "cluster labels must be below 1,048,576; got 1,048,576 (number the clusters 0..k-1)",
    ),
    "no labels": Case(
        record(np.empty(0, "V16"), np.empty(0, int)),
        BAD,
        "no labels given; a run needs at least one",
    ),
    "duplicate ids": Case(
        record([IDS[0], IDS[1], IDS[2], IDS[1]], [0, 1, 1, 0]),
        BAD,
        f"duplicate embedding id {IDS[1]} at rows 1 and 3 of the ids; ids must be unique "
        "within a run",
    ),
    "bad id syntax": Case(
        record([str(IDS[0]), "not-a-uuid", str(IDS[2]), str(IDS[3])], [0, 1, 1, 0]),
        BAD,
        "ids row 1: 'not-a-uuid' is not a UUID",
    ),
    "ids of integers": Case(
        record([1, 2, 3, 4], [0, 1, 1, 0]),
        BAD,
        "ids holds a 4 array of int64; ids must be 16-byte UUIDs (dtype V16 or N x 16 uint8) "
        "or UUID strings",
    ),
    "an id of another type": Case(
        record([IDS[0], IDS[1], 3.5, IDS[3]], [0, 1, 1, 0]),
        BAD,
        "ids row 2: 3.5 (float) is not a UUID, a UUID string or 16 bytes",
    ),
    "distances too short": Case(
        record(IDS, [0, 1, 1, 0], distances=[1.0, 2.0]),
        BAD,
        "distances must be a 1-D array of 4 numbers, got shape 2",
    ),
    "a label without a centroid": Case(
        record(IDS, [0, 1, 2, 0], centroids=np.zeros((2, 3))),
        BAD,
        "labels row 2: cluster 2 has no centroid (2 centroids given)",
    ),
    "centroids not finite": Case(
        record(IDS, [0, 1, 1, 0], centroids=[[0.0, 1.0], [np.nan, 1.0]]),
        BAD,
        "centroid 1 is not finite (as float32)",
    ),
    "params not JSON-like": Case(
        record(IDS, [0, 1, 1, 0], params={"f": object()}),
        BAD,
        "params must hold JSON-like values only: ...",
    ),
    "no model": Case(record(IDS, [0, 1, 1, 0], model=" "), BAD, "a run needs a model name"),
    "assign: no centroids": Case(
        assign("recorded", blobs(5)),
        BAD,
        "run {recorded.run_id} (hdbscan) has no centroids (recorded without centroids), so new "
        "embeddings cannot be assigned to its clusters; record the run with centroids, or use "
        "a run made by `clusterstore cluster`",
    ),
    "assign: another dimension": Case(
        assign("parent", blobs(5, d=5)),
        BAD,
        "embeddings has dimension 5 but run {parent.run_id}'s centroids have 8; assign "
        "embeddings made by the same model (m)",
    ),
    "assign: NaN": Case(
        assign("parent", np.where(np.arange(8) == 3, np.nan, blobs(6)).astype(np.float32)),
        BAD,
        "embeddings row 0 contains NaN; embeddings must be finite",
    ),
    "assign: ids of another count": Case(
        assign("parent", blobs(6), ids=uuids(5)), BAD, "5 ids given but the embeddings have 6 rows"
    ),
    "assign: unknown run": Case(
        assign("fedcba98", blobs(6)),
        clusterstore.RunNotFoundError,
        "no run matches 'fedcba98'; `clusterstore runs list` shows them",
    ),
    "assign: ambiguous prefix": Case(
        assign("prefix", blobs(6)),
        clusterstore.AmbiguousRunError,
        "run prefix '{prefix}' is ambiguous: it matches ...",
    ),
}


def expected(message: str, w: World) -> str:
    return message.format(parent=w.parent, recorded=w.recorded, prefix=w.prefix, dir=w.dir)


def check_message(text: str, message: str) -> None:
    if message.endswith("..."):
        assert text.startswith(message[:-3]), text
    else:
        assert text == message


@pytest.mark.parametrize("name", PYTHON_CASES)
def test_python_refusals_write_nothing(world: World, name: str) -> None:
    case = PYTHON_CASES[name]
    before = every_table(world.store)
    with pytest.raises(case.error) as info:
        case.call(world)
    assert isinstance(info.value, clusterstore.EventStoreError)
    check_message(str(info.value), expected(case.message, world))
    assert every_table(world.store) == before


# ---------------------------------------------------------------------------- the CLI


def files(w: World) -> None:
    d = w.dir
    np.save(d / "labels.npy", np.array([0, 1, 1, 0]))
    np.save(d / "float_labels.npy", np.array([0.0, 1.0, 1.0, 0.0]))
    np.save(d / "below.npy", np.array([0, -3, 1, 0]))
    np.save(d / "short.npy", np.array([0, 1, 1]))
    np.save(d / "new.npy", blobs(6))
    np.save(d / "new5.npy", blobs(6, d=5))
    (d / "ids.txt").write_text("".join(f"{u}\n" for u in IDS))
    (d / "dup.txt").write_text("".join(f"{u}\n" for u in [IDS[0], IDS[1], IDS[0], IDS[3]]))
    (d / "bad.csv").write_text(f"embedding_id,label\n{IDS[0]},0\n{IDS[1]},x\n")


CLI_CASES: dict[str, tuple[str, str]] = {
    "labels too short": (
        "record {dir}/short.npy --ids {dir}/ids.txt",
        "ids.txt holds 4 ids but the labels have 3 rows",
    ),
    "float labels": (
        "record {dir}/float_labels.npy --ids {dir}/ids.txt",
        "labels must be integers (cluster numbers, -1 for noise), got an array of float64",
    ),
    "labels below -1": (
        "record {dir}/below.npy --ids {dir}/ids.txt",
        "labels row 1: -3 is below -1 (-1 marks noise)",
    ),
    "duplicate ids": (
        "record {dir}/labels.npy --ids {dir}/dup.txt",
        f"duplicate embedding id {IDS[0]} at rows 0 and 2 of dup.txt (lines 1 and 3); ids must "
        "be unique within a run",
    ),
    "a label that is not an integer": (
        "record {dir}/bad.csv --id-column embedding_id",
        "bad.csv:label row 1: 'x' is not an integer",
    ),
    "no ids": (
        "record {dir}/labels.npy",
        "give the ids: --ids FILE, or --id-column NAME of a CSV/parquet LABELS",
    ),
    "params not JSON": (
        "record {dir}/labels.npy --ids {dir}/ids.txt --params {{nope",
        "--params is not valid JSON: ...",
    ),
    "assign: no centroids": (
        "assign {recorded.run_id} {dir}/new.npy",
        PYTHON_CASES["assign: no centroids"].message,
    ),
    "assign: another dimension": (
        "assign {parent.run_id} {dir}/new5.npy",
        "new5.npy has dimension 5 but run {parent.run_id}'s centroids have 8; assign "
        "embeddings made by the same model (m)",
    ),
    "assign: unknown run": (
        "assign fedcba98 {dir}/new.npy",
        "no run matches 'fedcba98'; `clusterstore runs list` shows them",
    ),
    "assign: ambiguous prefix": (
        "assign {prefix} {dir}/new.npy",
        "run prefix '{prefix}' is ambiguous: it matches ...",
    ),
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_refusals_are_one_error_line_and_write_nothing(world: World, name: str) -> None:
    files(world)
    args, message = CLI_CASES[name]
    argv = expected(args, world).split()
    if argv[0] == "record":
        argv += ["--model", "m", "--algorithm", "x"]
    before = every_table(world.store)
    result = CliRunner().invoke(cli, ["--db", world.db, *argv])
    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    check_message(result.stderr[len("Error: ") : -1], expected(message, world))
    assert isinstance(result.exception, SystemExit)
    assert every_table(world.store) == before


def test_record_and_assign_need_their_options(world: World) -> None:
    result = CliRunner().invoke(cli, ["--db", world.db, "record", "x.npy", "--model", "m"])
    assert result.exit_code == 2 and "Missing option '--algorithm'" in result.stderr
    assert uuid.UUID(str(world.parent.run_id))

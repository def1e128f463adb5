"""The issue's bad input for ``report`` and ``runs show --cluster`` at the CLI, beyond
tests/test_report.py: an unknown run with a cluster, a texts file without the named
columns for ``runs show``, an output directory nobody may write (root included), and a
failure after the output was started: one ``Error:`` line, exit 1, nothing left at the
target (no file, no temporary file)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterstore.eventstore import EventStore
from tests.audit_data import RUN_A, make_run
from tests.test_report import run


def test_runs_show_cluster_of_an_unknown_run(store: EventStore, db_url: str) -> None:
    make_run(store, RUN_A, n=20, k=2)
    result = run(db_url, "runs", "show", "ffff", "--cluster", "0")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "Error: no run matches 'ffff'; `clusterstore runs list` shows them\n",
    )


def test_runs_show_texts_without_the_columns(
    store: EventStore, db_url: str, tmp_path: Path
) -> None:
    make_run(store, RUN_A, n=20, k=2)
    path = tmp_path / "t.csv"
    path.write_text("doc,body\nx,y\n")
    args = ["runs", "show", str(RUN_A), "--cluster", "1", "--texts", str(path)]
    result = run(db_url, *args, "--id-column", "doc")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: texts file {path} has no column 'text' (its columns: doc, body); name them "
        "with --id-column and --text-column\n",
    )
    both = run(db_url, *args)
    assert both.exit_code == 1
    assert both.stderr.startswith(f"Error: texts file {path} has no column 'id', 'text' ")


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can create files in, root included (``chattr +i``)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("this file system (or user) cannot set the immutable attribute")
    try:
        yield locked
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_report_into_a_directory_nobody_may_write(
    store: EventStore, db_url: str, immutable_dir: Path
) -> None:
    make_run(store, RUN_A, n=20, k=2)
    target = immutable_dir / "r.html"
    result = run(db_url, "report", str(RUN_A), "-o", str(target))
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: cannot write {target}: Operation not permitted\n",
    )
    assert os.listdir(immutable_dir) == []


def test_report_failing_midway_leaves_nothing(
    store: EventStore, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The texts file's first chunk is right (checked before anything is written); a row
    far down is not UTF-8, found while the report is being made: the temporary file beside
    the target is removed and nothing appears at the target."""
    monkeypatch.setattr("clusterstore.audit.texts.CHUNK", 100)  # the check reads 100 rows
    make_run(store, RUN_A, n=20, k=2)
    texts = tmp_path / "t.csv"
    texts.write_bytes(b"id,text\n" + b"x,fine\n" * 20_000 + b"y,\xff\xfe\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "r.html"
    result = run(db_url, "report", str(RUN_A), "-o", str(target), "--texts", str(texts), "-q")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: texts file {texts} is not UTF-8 text: invalid start byte\n",
    )
    assert os.listdir(out_dir) == []

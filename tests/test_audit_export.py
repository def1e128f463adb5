"""export and events: content, determinism, undecodable rows, and streaming (flat memory)."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import IO
from uuid import UUID

import numpy as np
import pytest

from clusterstore.audit import FORMATS, export_format, export_run, open_output, write_events
from clusterstore.audit.export import npy_header
from clusterstore.eventstore import (
    EventDecodeError,
    EventStore,
    IncompleteRunError,
    OutputFileError,
)
from clusterstore.eventstore.errors import ConfigurationError
from tests.audit_data import (
    RUN_A,
    RUN_B,
    RUN_C,
    distances_for,
    drop_triggers,
    embedding_ids,
    flip_byte,
    labels_for,
    make_run,
    set_payload,
)


def test_csv_columns_in_seq_order(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=5, k=2, batch_size=2)
    result = export_run(store, RUN_A, tmp_path / "a.csv")
    assert result.rows == 5
    ids = [str(UUID(bytes=row.tobytes())) for row in embedding_ids(5)]
    labels = labels_for(5, 2, 0)
    dists = distances_for(5, 0)
    expected = "embedding_id,cluster,distance\n" + "".join(
        f"{i},{c},{d}\n" for i, c, d in zip(ids, labels, dists.astype(str), strict=True)
    )
    assert (tmp_path / "a.csv").read_text() == expected


def test_npy_is_a_structured_array(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=40, k=3)
    export_run(store, RUN_A, tmp_path / "a.npy", format="npy", page_size=7)
    arr = np.load(tmp_path / "a.npy")
    assert arr.dtype.names == ("embedding_id", "cluster", "distance")
    assert arr["embedding_id"].tobytes() == embedding_ids(40).tobytes()
    assert arr["cluster"].tolist() == labels_for(40, 3, 0).tolist()
    assert np.array_equal(arr["distance"], distances_for(40, 0))


def test_npy_header_has_one_length() -> None:
    assert len(npy_header(0)) == len(npy_header(10**15)) and len(npy_header(0)) % 64 == 0


def test_parquet(store: EventStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    make_run(store, RUN_A, n=30, k=3)
    export_run(store, RUN_A, tmp_path / "a.parquet", format="parquet", page_size=8)
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column_names == ["embedding_id", "cluster", "distance"]
    assert table.column("cluster").to_pylist() == labels_for(30, 3, 0).tolist()
    assert table.column("embedding_id")[0].as_py() == str(UUID(bytes=embedding_ids(1).tobytes()))


def test_parquet_without_pyarrow_is_a_clear_error(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_run(store, RUN_A, n=5, k=2)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigurationError, match=r"pip install 'clusterstore\[parquet\]'"):
        export_run(store, RUN_A, out / "a.parquet", format="parquet")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "npy", "parquet"])
def test_same_assignments_same_bytes(store: EventStore, tmp_path: Path, fmt: str) -> None:
    """Two runs over the same input with the same result export identically, however
    their logs were batched and paged; a different result does not."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    make_run(store, RUN_A, n=300, k=4, batch_size=64)
    make_run(store, RUN_B, n=300, k=4, batch_size=300, centroids=False, model="other")
    make_run(store, RUN_C, n=300, k=4, seed=1)
    paths = [tmp_path / f"{r}.{fmt}" for r in "abc"]
    export_run(store, RUN_A, paths[0], format=fmt, page_size=50)  # type: ignore[arg-type]
    export_run(store, RUN_B, paths[1], format=fmt, page_size=97)  # type: ignore[arg-type]
    export_run(store, RUN_C, paths[2], format=fmt)  # type: ignore[arg-type]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_export_names_the_bad_row_and_leaves_no_file(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=20, k=2)
    drop_triggers(store)
    flip_byte(store, RUN_A, 9, 0, 0x94)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EventDecodeError) as info:
        export_run(store, RUN_A, out / "a.csv")
    assert (info.value.run_id, info.value.seq) == (RUN_A, 9)
    assert list(out.iterdir()) == []


def test_export_into_a_missing_directory(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=5, k=2)
    with pytest.raises(ConfigurationError, match="does not exist"):
        export_run(store, RUN_A, tmp_path / "nope" / "a.csv")


# ---------------------------------------------------------------- events


def events_text(store: EventStore, run: UUID, **kw: object) -> list[dict[str, object]]:
    out = io.StringIO()
    write_events(store, run, out.write, **kw)  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_events_are_readable_json(store: EventStore) -> None:
    make_run(store, RUN_A, n=3, k=2)
    lines = events_text(store, RUN_A)
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert [x["type"] for x in lines] == [
        "RunStarted",
        "CentroidsComputed",
        "AssignmentRecorded",
        "AssignmentRecorded",
        "AssignmentRecorded",
        "RunCompleted",
    ]
    first = lines[2]
    assert first["run_id"] == str(RUN_A)
    assert first["data"] == {
        "embedding_id": str(UUID(bytes=embedding_ids(1).tobytes())),
        "cluster": int(labels_for(3, 2, 0)[0]),
        "distance": float(str(distances_for(3, 0)[0])),
    }
    centroids = lines[1]["data"]["centroids"]  # type: ignore[index]
    assert centroids["shape"] == [2, 2] and centroids["min"] == 0.0 and centroids["max"] == 0.75
    full = events_text(store, RUN_A, full=True, types={2})
    assert full[0]["data"]["centroids"] == [[0.0, 0.25], [0.5, 0.75]]  # type: ignore[index]


def test_events_after_limit_and_type(store: EventStore) -> None:
    make_run(store, RUN_A, n=30, k=2)
    assert [x["seq"] for x in events_text(store, RUN_A, after=10, limit=3)] == [11, 12, 13]
    only = events_text(store, RUN_A, types={1, 4}, page_size=4)
    assert [x["type"] for x in only] == ["RunStarted", "RunCompleted"]
    assert events_text(store, RUN_A, types={3}, limit=0) == []


def test_undecodable_events_are_reported_not_fatal(store: EventStore) -> None:
    make_run(store, RUN_A, n=5, k=2)
    drop_triggers(store)
    set_payload(store, RUN_A, 1, b"\xc1")
    flip_byte(store, RUN_A, 4, 0, 0x94)
    out = io.StringIO()
    result = write_events(store, RUN_A, out.write)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (result.lines, result.undecodable, result.first_undecodable) == (8, 2, 1)
    assert lines[0]["payload_hex"] == "c1" and "does not decode" in lines[0]["error"]
    assert lines[3]["seq"] == 4 and "error" in lines[3]
    assert lines[4]["data"]["cluster"] == int(labels_for(5, 2, 0)[2])


# ---------------------------------------------------------------- streaming


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class Sink:
    """Discards what is written; counts it."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> None:
        self.chars += len(text)


@pytest.mark.slow
def test_events_and_export_memory_stays_flat(store: EventStore, tmp_path: Path) -> None:
    """Four times the events must not need anything like four times the memory: a page
    (500 events) is held at a time, whatever the run's length."""
    make_run(store, RUN_A, n=3_000, k=8)
    make_run(store, RUN_B, n=12_000, k=8, seed=1)
    page = 500

    def events(run: UUID) -> Callable[[], object]:
        return lambda: write_events(store, run, Sink().write, page_size=page)

    def export(run: UUID, fmt: str) -> Callable[[], object]:
        path = tmp_path / f"{run}.{fmt}"
        return lambda: export_run(store, run, path, format=fmt, page_size=page, force=True)  # type: ignore[arg-type]

    jobs: list[tuple[str, Callable[[UUID], Callable[[], object]]]] = [
        ("events", events),
        ("csv", lambda r: export(r, "csv")),
        ("npy", lambda r: export(r, "npy")),
    ]
    for name, job in jobs:
        job(RUN_A)()  # warm caches (statement compilation, imports)
        small, big = peak_bytes(job(RUN_A)), peak_bytes(job(RUN_B))
        assert big < 1.6 * small, f"{name}: peak {big} B for 4x the events vs {small} B"


# ---------------------------------------------------------------- the output file (issue 16)

CSV_START = "embedding_id,cluster,distance\n"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.sqlite_only
def test_the_store_files_are_refused(store: EventStore, tmp_path: Path) -> None:
    """The database, its -wal (and links to either) are refused even with force; the store
    is intact afterwards."""
    make_run(store, RUN_A, n=20, k=2)
    db, wal = store.local_files()[:2]
    assert db.is_file() and wal.is_file()  # the store is open: WAL mode keeps the -wal
    (tmp_path / "hard.csv").hardlink_to(db)
    (tmp_path / "soft.csv").symlink_to(wal)
    before = db.read_bytes()
    for target in (db, wal, tmp_path / "hard.csv", tmp_path / "soft.csv"):
        with pytest.raises(OutputFileError, match="is one of the store's own files"):
            export_run(store, RUN_A, target, format="csv", force=True)
    assert db.read_bytes() == before and (tmp_path / "soft.csv").is_symlink()
    assert leftovers(tmp_path) == []
    assert export_run(store, RUN_A, tmp_path / "ok.csv").rows == 20  # still readable


def test_an_existing_file_is_kept_unless_forced(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=5, k=2)
    out = tmp_path / "a.csv"
    out.write_text("keep me\n")
    out.chmod(0o640)
    with pytest.raises(OutputFileError) as info:
        export_run(store, RUN_A, out)
    assert (
        str(info.value) == f"{out} already exists; pass --force to replace it, or give another name"
    )
    assert out.read_text() == "keep me\n"
    export_run(store, RUN_A, out, force=True)
    assert out.read_text().startswith(CSV_START)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_a_symlink_is_followed(store: EventStore, tmp_path: Path) -> None:
    """The file the link points to is written (created, or replaced with force); the link
    stays a link."""
    make_run(store, RUN_A, n=5, k=2)
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "real.csv"
    link = tmp_path / "latest.csv"
    link.symlink_to(Path("data") / "real.csv")  # dangling, relative
    export_run(store, RUN_A, link)
    assert link.is_symlink() and real.read_text().startswith(CSV_START)
    real.write_text("old\n")
    with pytest.raises(OutputFileError, match=r"\(the symlink .*latest.csv points to it\)"):
        export_run(store, RUN_A, link)
    assert real.read_text() == "old\n"
    export_run(store, RUN_A, link, force=True)
    assert link.is_symlink() and real.read_text().startswith(CSV_START)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_non_regular_targets_are_refused(store: EventStore, tmp_path: Path, kind: str) -> None:
    make_run(store, RUN_A, n=5, k=2)
    if kind == "fifo":
        target, check, name = tmp_path / "pipe.csv", stat.S_ISFIFO, "a FIFO"
        os.mkfifo(target)
    elif kind == "device":
        target, check, name = Path("/dev/null"), stat.S_ISCHR, "a character device"
    else:
        target, check, name = tmp_path / "dir.csv", stat.S_ISDIR, "a directory"
        target.mkdir()
    for force in (False, True):
        with pytest.raises(OutputFileError) as info:
            export_run(store, RUN_A, target, format="csv", force=force)
        assert str(info.value) == (
            f"{target} is {name}, not a regular file; give a file name (or - for standard output)"
        )
    assert check(os.lstat(target).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_new_file_gets_the_umask_mode(
    store: EventStore, tmp_path: Path, umask: int, mode: int
) -> None:
    make_run(store, RUN_A, n=5, k=2)
    previous = os.umask(umask)
    try:
        export_run(store, RUN_A, tmp_path / "a.npy")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == mode


@pytest.mark.parametrize(
    ("path", "fmt", "expected"),
    [
        ("a.csv", None, "csv"),
        ("A.NPY", None, "npy"),
        ("a.parquet", "parquet", "parquet"),
        ("c.bin", "npy", "npy"),
        ("-", "csv", "csv"),
        (
            "a.csv",
            "npy",
            "a.csv has the extension .csv but --format is npy; name the file .npy or drop --format",
        ),
        (
            "x.json",
            None,
            "cannot tell the format of x.json from its extension; name it .csv, .npy or "
            ".parquet, or give --format csv, npy or parquet",
        ),
        ("-", None, "writing to standard output (-o -) needs --format csv or parquet"),
    ],
)
def test_the_format_follows_the_extension(path: str, fmt: str | None, expected: str) -> None:
    if expected in FORMATS:
        assert export_format(path, fmt) == expected
    else:
        with pytest.raises(OutputFileError) as info:
            export_format(path, fmt)
        assert str(info.value) == expected


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_write_leaves_no_temp_file(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    make_run(store, RUN_A, n=5, k=2)
    out = tmp_path / "a.csv"
    if existing:
        out.write_text("keep me\n")

    def half_then_fail(f: IO[bytes], blocks: object) -> int:
        f.write(b"half a file")
        f.flush()
        assert leftovers(tmp_path) == [f".a.csv.clusterstore-{os.getpid()}.tmp"]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("clusterstore.audit.export._write_csv", half_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_run(store, RUN_A, out, force=True)
    assert leftovers(tmp_path) == []
    assert (out.read_text() == "keep me\n") if existing else not out.exists()


def test_sigterm_mid_write_removes_the_temp_file(tmp_path: Path) -> None:
    """In the writing process: SIGTERM becomes SystemExit(143), the temp file goes, and the
    previous handler is back afterwards."""

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("the previous handler must not run during the write")

    original = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(SystemExit) as info, open_output(tmp_path / "a.csv") as f:
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a point where the pending handler runs
        assert info.value.code == 143
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, original)
    assert sorted(os.listdir(tmp_path)) == []


WRITER = """
import sys
from clusterstore.audit.output_file import open_output
with open_output(sys.argv[1]) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # blocks until the parent signals
"""


def start_writer(target: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline() == "writing\n"
    assert leftovers(target.parent) == [f".{target.name}.clusterstore-{child.pid}.tmp"]
    return child


def test_sigterm_to_a_writing_process(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    child = start_writer(tmp_path / "a.csv", subprocess_env)
    child.send_signal(signal.SIGTERM)
    child.communicate()  # waits, and closes the pipes
    assert child.returncode == 143
    assert os.listdir(tmp_path) == []


def test_a_killed_writers_temp_file_goes_with_the_next_export(
    store: EventStore, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    make_run(store, RUN_A, n=5, k=2)
    child = start_writer(tmp_path / "a.csv", subprocess_env)
    child.kill()
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    stale = f".a.csv.clusterstore-{child.pid}.tmp"
    live = f".b.csv.clusterstore-{os.getpid()}.tmp"  # a live process's: left alone
    (tmp_path / live).write_text("in progress")
    assert leftovers(tmp_path) == sorted([stale, live])
    export_run(store, RUN_A, tmp_path / "c.csv")
    assert leftovers(tmp_path) == [live]
    assert not (tmp_path / "a.csv").exists()


def test_an_incomplete_run_is_refused_unless_allowed(store: EventStore, tmp_path: Path) -> None:
    make_run(store, RUN_A, n=50, k=4, end="none", rows=10)
    make_run(store, RUN_B, n=50, k=4, end="fail", rows=20)
    for run, label, rows in ((RUN_A, "incomplete", 10), (RUN_B, "failed", 20)):
        with pytest.raises(IncompleteRunError) as info:
            export_run(store, run, tmp_path / f"{run}.csv")
        assert str(info.value) == (
            f"run {run} is not completed (status: {label}); {rows} assignments are recorded; "
            "pass --allow-incomplete to export them anyway"
        )
        assert not (tmp_path / f"{run}.csv").exists()
        result = export_run(store, run, tmp_path / f"{run}.csv", allow_incomplete=True)
        assert (result.rows, result.status != "completed") == (rows, True)

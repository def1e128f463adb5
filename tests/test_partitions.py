"""PostgreSQL partitioned by run: ``clusterstore init --partitions N``.

The log (``cs_events``) and each read-model generation's assignment table are declarative
hash partitions on their run column; everything else about the store is unchanged, which
the whole shared suite checks by running on the ``postgres-partitioned`` backend too
(tests/conftest.py). Here: the layout itself, that a rebuild keeps it, that every partition
is append-only, and the refusals (range, SQLite, an existing store of another layout, a bad
``clusterstore.partitions`` setting), each one ``Error:`` line with nothing changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from clusterstore import projections
from clusterstore.eventstore import EventStore, ImmutableLogError, PartitioningError
from clusterstore.eventstore.config import resolve_url
from clusterstore.projections.base import current_generation
from clusterstore.projections.schema import ec_tables
from tests.api_util import every_table
from tests.conftest import drop_pg_schema, make_pg_schema_url, partitions_of
from tests.contracts.support import snapshot
from tests.pj_util import make_run
from tests.pj_util import snapshot as read_models
from tests.test_bad_input import assert_one_error_line, invoke
from tests.test_cli_init import shown


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty schema (no ``clusterstore.partitions`` setting), dropped afterwards."""
    url, name = make_pg_schema_url()
    try:
        yield url
    finally:
        drop_pg_schema(name)


def layout(store: EventStore, table: str) -> tuple[str, str, int] | None:
    """(strategy, key column, number of partitions) of ``table``; None: a plain table."""
    with store.transaction() as conn:
        row = conn.execute(
            text(
                "SELECT p.partstrat, a.attname, "
                "(SELECT count(*) FROM pg_inherits i WHERE i.inhparent = p.partrelid) "
                "FROM pg_partitioned_table p JOIN pg_attribute a "
                "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
                "WHERE p.partrelid = to_regclass(:t)"
            ),
            {"t": table},
        ).first()
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))


def assignments_table(store: EventStore) -> str:
    with store.transaction() as conn:
        generation = current_generation(conn, "embeddingcluster")
    assert generation is not None
    return ec_tables(generation).assignments.name


def tables_in(url: str) -> list[str]:
    """The tables and views of the URL's schema, read without opening a store (which could
    create one)."""
    engine = create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c WHERE c.relnamespace = "
                    "current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v') ORDER BY 1"
                )
            )
            return [str(r[0]) for r in rows]
    finally:
        engine.dispose()


def init(url: str, *args: str) -> Result:
    return invoke(url, ["init", *args])


# ---------------------------------------------------------------------------- the layout


def test_init_partitions_the_log_and_the_assignments_by_run(pg_url: str) -> None:
    result = init(pg_url, "--partitions", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"db_url": shown(pg_url), "n_partitions": 4}
    with EventStore.open(pg_url) as store:
        assert store.partitions() == 4
        assert layout(store, "cs_events") == ("h", "run_id", 4)
        assert layout(store, assignments_table(store)) == ("h", "run_key", 4)
        for plain in ("cs_commits", "cs_runs", "cs_meta", "pj_checkpoint"):
            assert layout(store, plain) is None, plain
    # again, with the same number: nothing to do, and it says so
    again = init(pg_url, "--partitions", "4")
    assert (again.exit_code, again.stdout) == (
        0,
        f"clusterstore ready at {shown(pg_url)} (partitioned by run: 4 partitions)\n",
    )
    plain = init(pg_url)  # without --partitions: an existing store is taken as it is
    assert plain.exit_code == 0 and plain.stdout.endswith("(partitioned by run: 4 partitions)\n")


def test_each_run_lives_in_one_partition_and_runs_spread(pg_url: str) -> None:
    with EventStore.open(pg_url, partitions=3) as store:
        runs = [make_run(store, 40, seed=s) for s in range(12)]
        projections.catch_up_all(store)
        placed = {
            "cs_events": "SELECT run_id::text, tableoid::regclass::text FROM cs_events",
            assignments_table(store): "SELECT r.run_id::text, a.tableoid::regclass::text "
            f"FROM {assignments_table(store)} a JOIN pj_ec_run_g1 r USING (run_key)",
        }
        for table, sql in placed.items():
            with store.transaction() as conn:
                pairs = {(str(a), str(b)) for a, b in conn.execute(text(sql))}
            by_run: dict[str, set[str]] = {}
            for run, part in pairs:
                by_run.setdefault(run, set()).add(part)
            assert sorted(by_run) == sorted(str(r) for r in runs), table
            assert all(len(parts) == 1 for parts in by_run.values()), table
            assert len(set().union(*by_run.values())) > 1, table  # 12 runs over 3 partitions
            assert all(p.startswith(f"{table}_p") for p in set().union(*by_run.values()))


def test_rebuild_keeps_the_read_model_partitioned(pg_url: str) -> None:
    with EventStore.open(pg_url, partitions=4) as store:
        for seed in range(3):
            make_run(store, 50, seed=seed)
        projections.catch_up_all(store)
        before = read_models(store)
        first = assignments_table(store)
        projections.rebuild(store, ["embeddingcluster"])
        second = assignments_table(store)
        assert second != first
        assert layout(store, second) == ("h", "run_key", 4)
        assert layout(store, first) is None  # the old generation and its partitions are gone
        assert not [t for t in tables_in(pg_url) if t.startswith(f"{first}_p")]
        assert read_models(store) == before


def test_every_log_partition_is_append_only(pg_url: str) -> None:
    with EventStore.open(pg_url, partitions=2) as store:
        make_run(store, 30)
        before = snapshot(store)
        for part in ("cs_events_p0", "cs_events_p1"):
            for sql, op in (
                (f"UPDATE {part} SET type = type", "UPDATE"),
                (f"DELETE FROM {part}", "DELETE"),
                (f"TRUNCATE {part}", "TRUNCATE"),
            ):
                with store.transaction() as conn:
                    empty = conn.execute(text(f"SELECT count(*) FROM {part}")).scalar() == 0
                if empty and op != "TRUNCATE":
                    continue  # a row trigger needs a row
                with pytest.raises(ImmutableLogError) as e, store.transaction(write=True) as c:
                    c.exec_driver_sql(sql)
                assert f"clusterstore: cs_events is append-only; {op} is not allowed" in str(
                    e.value
                )
        assert snapshot(store) == before


def test_the_setting_partitions_new_stores_and_the_option_wins(tmp_path: Path) -> None:
    url, name = make_pg_schema_url(partitions=5)
    try:
        with EventStore.open(url) as store:
            assert store.partitions() == 5
    finally:
        drop_pg_schema(name)
    url, name = make_pg_schema_url(partitions=5)
    try:
        assert init(url, "--partitions", "2").exit_code == 0
        with EventStore.open(url) as store:
            assert store.partitions() == 2
    finally:
        drop_pg_schema(name)


def test_the_suite_s_partitioned_backend_makes_partitioned_stores(
    backend: str, store: EventStore
) -> None:
    """The shared suite's ``postgres-partitioned`` variant really runs on that layout."""
    assert store.partitions() == partitions_of(backend)


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("n", ["0", "1", "1025", "-2"])
def test_out_of_range_creates_nothing(pg_url: str, n: str) -> None:
    assert_one_error_line(
        init(pg_url, "--partitions", n),
        1,
        f"--partitions {n} is out of range: give 2 to 1024 partitions",
    )
    assert tables_in(pg_url) == []


def test_sqlite_refuses_partitions_and_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    assert_one_error_line(
        init(str(path), "--partitions", "4"),
        1,
        f"{shown(str(path))}: --partitions is for PostgreSQL stores only (this is a sqlite "
        "store, which is never partitioned); nothing was changed",
    )
    assert not path.exists()
    with pytest.raises(PartitioningError):
        EventStore.open(path, partitions=4)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_sqlite_store_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with EventStore.open(path) as store:
        make_run(store, 20)
    before = path.read_bytes()
    result = init(str(path), "--partitions", "4")
    assert result.exit_code == 1 and "--partitions is for PostgreSQL stores only" in result.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize(("existing", "wanted"), [(None, 4), (4, 8), (4, 2)])
def test_an_existing_store_of_another_layout_is_refused(
    pg_url: str, existing: int | None, wanted: int
) -> None:
    with EventStore.open(pg_url, partitions=existing) as store:
        make_run(store, 20)
        projections.catch_up_all(store)
        before = every_table(store)
    have = "is not partitioned" if existing is None else f"has {existing} partitions"
    assert_one_error_line(
        init(pg_url, "--partitions", str(wanted)),
        1,
        f"{shown(pg_url)} already holds a store that {have}; --partitions {wanted} only "
        "applies when a store is created (nothing was changed; create the partitioned store "
        "in a new database or schema)",
    )
    with EventStore.open(pg_url) as store:
        assert every_table(store) == before
        assert store.partitions() == existing
    with pytest.raises(PartitioningError):
        EventStore.open(pg_url, partitions=wanted)


@pytest.mark.parametrize("value", ["1", "lots", "2000"])
def test_a_bad_setting_creates_nothing(value: str) -> None:
    plain, name = make_pg_schema_url()
    options = f"-csearch_path={name} -cclusterstore.partitions={value}"
    url = make_url(plain).update_query_dict({"options": options})
    url = url.render_as_string(hide_password=False)
    try:
        assert_one_error_line(
            init(url),
            1,
            f"the PostgreSQL setting clusterstore.partitions = '{value}' is not a number of "
            "partitions (2 to 1024); nothing was created",
        )
        assert tables_in(url) == []
    finally:
        drop_pg_schema(name)

"""``primary_key=`` upserts in the PostgreSQL and SQLite sinks, on a real server and real
database files, through ``stream(...).records(...).into(...)`` against a real page server.

The page server here is a change feed, as incremental APIs have (``/changes?page=N``):
every change of a record adds its new version at the end of the list, and pages already
listed stay as they were. So a run that resumes a finished one (``mode="resume"``: it looks
for records past the last ones written) finds the new versions of changed records, on the
last page and new pages: the table must then hold each record once, in its new form.
"""

from __future__ import annotations

import decimal
import pickle
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from yarl import URL

import streampage
from streampage import ConfigurationError, PageNumber
from streampage._checkpoint import Checkpoint
from streampage._errors import SinkError
from streampage.sinks import SQLite
from streampage.sinks.postgres import Postgres, application_name

pytest_plugins = ["pg_server"]  # the postgres_dsn fixture: a real server for the session


# ---------------------------------------------------------------------- an incremental API


class Feed:
    """A change feed of records ``1..n``, ``per_page`` entries a page: ``change(i)`` adds a
    new version of record ``i`` at the end, ``add()`` a new record; ``snapshot`` lists
    each record once instead, in its newest version, by id (a plain list API)."""

    def __init__(self, n: int, per_page: int = 3) -> None:
        self.per_page = per_page
        self.version = {i: 1 for i in range(1, n + 1)}
        self.log = [(i, 1) for i in self.version]

    def change(self, *ids: int) -> None:
        for i in ids:
            self.version[i] += 1
            self.log.append((i, self.version[i]))

    def add(self) -> None:
        i = len(self.version) + 1
        self.version[i] = 1
        self.log.append((i, 1))

    @staticmethod
    def record(i: int, v: int) -> dict[str, Any]:
        return {"id": i, "name": f"item-{i} v{v}", "version": v}

    def items(self, n: int) -> list[dict[str, Any]]:
        start = (n - 1) * self.per_page
        return [self.record(i, v) for i, v in self.log[start : start + self.per_page]]

    def snapshot(self, n: int) -> list[dict[str, Any]]:
        start = (n - 1) * self.per_page
        return self.latest()[start : start + self.per_page]

    def latest(self) -> list[dict[str, Any]]:
        """Every record once, in its newest version, by id."""
        return [self.record(i, v) for i, v in sorted(self.version.items())]


async def serve(page_server: Any, pages: Callable[[int], list[dict[str, Any]]]) -> Any:
    """A page server whose page ``n`` holds ``pages(n)`` (an empty page ends the list)."""
    server = await page_server(pages=None, per_page=1)
    server.items = pages  # what its body(n) serves
    return server


async def run(
    server: Any, sink: Any, *, mode: str = "new", batch: int = 4, checkpoint: str = "sync"
) -> streampage.StreamStats:
    return await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(sink, batch=batch, checkpoint=checkpoint, mode=mode)  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------- the two targets


class Thing(msgspec.Struct):
    id: int
    name: str
    version: int


class Target:
    """A fresh table of one SQL sink: make its sinks, read its rows, run SQL on it."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where  # a DSN (a database of its own), or a database file

    def sink(self, table: str = "items", **kwargs: Any) -> Any:
        if self.kind == "postgres":
            return Postgres(self.where, table, **kwargs)
        return SQLite(self.where, table, **kwargs)

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            conn = await asyncpg.connect(self.where)
            try:
                return [tuple(r) for r in await conn.fetch(statement)]
            finally:
                await conn.close()
        db = sqlite3.connect(self.where, isolation_level=None)
        try:
            return db.execute(statement).fetchall()
        finally:
            db.close()

    async def records(self, table: str = "items") -> list[dict[str, Any]]:
        """The table's records (its ``data``), in id order."""
        cast = "::text" if self.kind == "postgres" else ""
        rows = await self.sql(f"SELECT data{cast} FROM {table}")
        found = [msgspec.json.decode(r[0]) for r in rows]
        return sorted(found, key=lambda r: (str(r.get("region")), r["id"]))

    async def checkpoint(self, name: str = "sync", table: str = "items") -> Checkpoint | None:
        key = f"{table}/{name}"
        rows = await self.sql(
            f"SELECT checkpoint{'::text' if self.kind == 'postgres' else ''} "
            f"FROM streampage_checkpoints WHERE name = '{key}'"
        )
        return Checkpoint.from_json(rows[0][0]) if rows else None


@pytest.fixture
async def pg_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield str(URL(postgres_dsn).with_path(f"/{name}"))
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(params=["postgres", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "postgres":
        return Target("postgres", request.getfixturevalue("pg_dsn"))
    return Target("sqlite", str(tmp_path / "items.db"))


# ---------------------------------------------------------------------- records that change


async def test_a_record_changed_between_runs_is_there_once_in_its_new_form(
    page_server: Any, target: Target
) -> None:
    feed = Feed(20)  # 7 pages: the last one holds 19 and 20
    server = await serve(page_server, feed.items)
    first = await run(server, target.sink(primary_key="id"))
    assert first.committed_pages == 7
    assert await target.records() == feed.latest()

    feed.change(2, 5, 11)  # page 7 is now 19, 20, 2; page 8 is 5, 11
    assert [r["id"] for r in feed.items(8)] == [5, 11]
    again = await run(server, target.sink(primary_key="id"), mode="resume")
    assert again.committed_pages == 2  # the last page again (its new record), and page 8
    found = await target.records()
    assert [r["id"] for r in found] == list(range(1, 21))  # each record once
    assert found == feed.latest()  # ... in its newest version
    assert {r["id"] for r in found if r["version"] == 2} == {2, 5, 11}


async def test_a_full_run_on_a_new_checkpoint_upserts_every_record(
    page_server: Any, target: Target
) -> None:
    """A plain list API read whole again (a new checkpoint: every page delivered again):
    the records changed in place replace their rows, the others are written over as they
    were, and none is there twice."""
    feed = Feed(20)
    server = await serve(page_server, feed.snapshot)
    await run(server, target.sink(primary_key="id"), checkpoint="monday")
    feed.change(2, 5, 11)
    feed.add()
    stats = await run(server, target.sink(primary_key="id"), checkpoint="tuesday")
    assert stats.committed_pages == 7
    found = await target.records()
    assert [r["id"] for r in found] == list(range(1, 22))
    assert found == feed.latest()
    assert {r["id"] for r in found if r["version"] == 2} == {2, 5, 11}


async def test_without_primary_key_the_same_runs_append(page_server: Any, target: Target) -> None:
    """What the upsert is for: the runs above, without it, leave two versions of a record."""
    feed = Feed(20)
    server = await serve(page_server, feed.items)
    await run(server, target.sink())
    feed.change(2, 5, 11)
    await run(server, target.sink(), mode="resume")
    ids = [r["id"] for r in await target.records()]
    assert len(ids) == 23 and ids.count(5) == 2


async def test_a_failed_run_resumed_then_an_incremental_run_each_record_once(
    page_server: Any, target: Target
) -> None:
    feed = Feed(30)  # 10 pages
    fail = {6: 400}
    server = await serve(page_server, feed.items)
    server.fail = fail
    with pytest.raises(streampage.HTTPStatusError):
        await run(server, target.sink(primary_key="id"), batch=3)
    # the table holds exactly the records of the pages its checkpoint names: none of a
    # batch that was staged (COPYed, for PostgreSQL) and not committed
    held = await target.checkpoint()
    assert held is not None and 0 < len(held) < 10
    assert len(await target.records()) == 3 * len(held)

    fail.clear()
    resumed = await run(server, target.sink(primary_key="id"), mode="resume", batch=3)
    assert resumed.committed_pages == 10 - len(held)
    assert await target.records() == feed.latest()

    feed.change(1, 2, 3, 17)
    feed.add()  # and a new record, 31
    await run(server, target.sink(primary_key="id"), mode="resume", batch=3)
    found = await target.records()
    assert [r["id"] for r in found] == list(range(1, 32))  # every record exactly once
    assert found == feed.latest()


async def test_the_same_key_twice_in_one_batch_keeps_the_last(
    page_server: Any, target: Target
) -> None:
    pages = [
        [{"id": 1, "v": "a"}, {"id": 2, "v": "a"}, {"id": 1, "v": "b"}],  # twice on a page
        [{"id": 2, "v": "b"}, {"id": 3, "v": "a"}, {"id": 1, "v": "c"}],  # and across pages
        [{"id": 3, "v": "b"}],
    ]
    server = await serve(page_server, lambda n: pages[n - 1] if n <= len(pages) else [])
    stats = await run(server, target.sink(primary_key="id"), batch=1000)  # one commit
    assert stats.committed_pages == 3
    assert await target.records() == [
        {"id": 1, "v": "c"},
        {"id": 2, "v": "b"},
        {"id": 3, "v": "b"},
    ]


async def test_writes_before_one_commit_keep_the_last_version(target: Target) -> None:
    """write(), write(), commit(): the sink protocol without staging, the same rule."""
    sink = target.sink(primary_key="id")
    await sink.open("x")
    try:
        await sink.write([{"id": 1, "v": "a"}, {"id": 2, "v": "a"}])
        await sink.write([{"id": 1, "v": "b"}])
        await sink.commit("x", Checkpoint().to_json())
        await sink.write([{"id": 2, "v": "b"}, {"id": 2, "v": "c"}])
        await sink.commit("x", Checkpoint().to_json())
    finally:
        await sink.close()
    assert await target.records() == [{"id": 1, "v": "b"}, {"id": 2, "v": "c"}]


async def test_a_composite_key(page_server: Any, target: Target) -> None:
    pages = [
        [{"region": "eu", "id": 1, "v": 1}, {"region": "us", "id": 1, "v": 1}],
        [{"region": "eu", "id": 1, "v": 2}],
    ]
    server = await serve(page_server, lambda n: pages[n - 1] if n <= len(pages) else [])
    await run(server, target.sink(primary_key=("region", "id")))
    assert await target.records() == [
        {"region": "eu", "id": 1, "v": 2},
        {"region": "us", "id": 1, "v": 1},
    ]


# ---------------------------------------------------------------------- records without a key


@pytest.mark.parametrize("bad", [{"name": "x", "token": "s3cret"}, {"id": None, "token": "s3cret"}])
async def test_a_record_without_its_key_is_a_clear_error(
    page_server: Any, target: Target, bad: dict[str, Any]
) -> None:
    pages = [[{"id": 1, "token": "a"}], [{"id": 2, "token": "b"}, bad]]
    server = await serve(page_server, lambda n: pages[n - 1] if n <= len(pages) else [])
    with pytest.raises(SinkError) as caught:
        await run(server, target.sink(primary_key="id"), batch=1000)
    message = str(caught.value)
    assert "failed to write" in message
    assert "'id'" in message and "primary_key" in message
    assert ("has no field 'id'" if "id" not in bad else "has 'id': null") in message
    assert "record 2 of 2 of a page" in message
    assert f"Its keys: {', '.join(bad)}" in message  # its keys, not its values
    assert "s3cret" not in message
    assert await target.records() == []  # nothing of the batch was committed
    assert await target.checkpoint() is None


def test_a_record_that_is_no_object_has_no_key(tmp_path: Path) -> None:
    sink = SQLite(tmp_path / "x.db", primary_key="id")
    with pytest.raises(ValueError, match=r"record 1 of 1 of a page is list, not an object"):
        sink.stage([[1, 2]])
    with pytest.raises(ValueError, match=r"has no field 'id'.*Its keys: ID"):
        sink.stage([{"ID": 2}])
    assert sink.stage([{"id": 0}, {"id": ""}, {"id": False}])  # falsy keys are keys


def test_the_key_checks_judge_every_kind_of_page_alike(tmp_path: Path) -> None:
    """stage's key checks take a fast path for pages of dicts with one key (C-speed scans)
    and the record-by-record loop for the rest: both give the same verdict, and the loop's
    message, whatever the page holds and wherever the bad record is in it."""
    sink = SQLite(tmp_path / "x.db", primary_key="id")
    ok_pages: list[list[Any]] = [
        [{"id": 2**63 - 1}, {"id": -(2**63)}],  # the edges of 64 bits
        [{"id": "a"}, {"id": "b"}],
        [{"id": 1}, {"id": "1"}, {"id": 2.5}],  # kinds that do not compare
        [{"id": 1e300}, {"id": True}],  # a float past 64 bits is no integer
        [{"id": [1, 2]}, {"id": {"a": 1}}],
        [{"id": 1}, Thing(2, "b", 1)],  # a Struct among dicts
    ]
    for page in ok_pages:
        assert sink.stage(page), page
    past = "is an integer past 64 bits"
    bad_pages: list[tuple[list[Any], str]] = [
        ([{"id": 2**63}], past),
        ([{"id": 1}, {"id": -(2**63) - 1}], past),
        ([{"id": "a"}, {"id": 2**64}], past),  # mixed kinds: the loop finds it
        ([{"id": 1.0}, {"id": 2**64}], past),
        ([{"id": 1}, {"id": 2}, {"name": "x"}], "record 3 of 3 of a page has no field 'id'"),
        ([{"id": None}, {"id": 2}], "record 1 of 2 of a page has 'id': null"),
        ([{"id": 1}, [1]], "record 2 of 2 of a page is list, not an object"),
    ]
    for page, message in bad_pages:
        with pytest.raises(ValueError, match=re.escape(message)):
            sink.stage(page)
    composite = SQLite(tmp_path / "y.db", primary_key=("region", "id"))
    assert composite.stage([{"region": "eu", "id": 2**63 - 1}])
    with pytest.raises(ValueError, match=past):
        composite.stage([{"region": "eu", "id": 2**63}])
    with pytest.raises(ValueError, match="has 'region': null"):
        composite.stage([{"region": None, "id": 1}])


async def test_struct_records_are_checked_by_their_encoded_names(pg_dsn: str) -> None:
    class Renamed(msgspec.Struct, rename="camel"):
        item_id: int | None
        name: str

    sink = Postgres(pg_dsn, primary_key="itemId")
    assert sink.stage([Renamed(1, "a")])
    with pytest.raises(ValueError, match=r"has 'itemId': null.*Its keys: item_id, name"):
        sink.stage([Renamed(None, "a")])


# ---------------------------------------------------------------------- an existing table


async def test_an_existing_table_without_the_unique_index_is_refused_with_the_fix(
    page_server: Any, target: Target
) -> None:
    feed = Feed(6)
    server = await serve(page_server, feed.items)
    await run(server, target.sink(), checkpoint="old")  # a table of appended records

    with pytest.raises(ConfigurationError) as caught:
        await run(server, target.sink(primary_key="id"), checkpoint="new")
    message = str(caught.value)
    assert "table items" in message and "primary_key='id'" in message
    fix = re.search(r"add one with (CREATE UNIQUE INDEX .*?) \(rows with", message)
    assert fix is not None, message
    expression = "(data ->> 'id')" if target.kind == "postgres" else "json_extract(data, '$.id')"
    assert expression in fix[1]

    await target.sql(fix[1])  # the statement the message gives is the fix
    feed.change(3)
    await run(server, target.sink(primary_key="id"), checkpoint="new")
    assert await target.records() == feed.latest()


async def test_a_table_created_with_primary_key_has_its_unique_index(target: Target) -> None:
    sink = target.sink(primary_key="id")
    await sink.open("x")
    await sink.close()
    if target.kind == "postgres":
        found = await target.sql(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'items' AND indexdef LIKE "
            "'CREATE UNIQUE INDEX items_id_key %'"
        )
        assert len(found) == 1 and "((data ->> 'id'::text))" in found[0][0]
    else:
        found = await target.sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'"
        )
        assert found == [('CREATE UNIQUE INDEX "items_id_key" ON items (json_extract(data, '
                          "'$.id'))",)]  # fmt: skip
    # and the index itself refuses a second row of a key (whoever writes the table)
    insert = "INSERT INTO items (data) VALUES ('{\"id\": 1}')"
    await target.sql(insert)
    with pytest.raises((asyncpg.UniqueViolationError, sqlite3.IntegrityError)):
        await target.sql(insert)


async def test_create_false_and_a_typed_table_without_a_key_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE things (id bigint NOT NULL, name text, version bigint)")
    finally:
        await conn.close()
    sink = Postgres(pg_dsn, "things", columns=Thing, create=False, primary_key="id")
    with pytest.raises(ConfigurationError) as caught:
        await sink.open("x")
    message = str(caught.value)
    assert 'no unique index on column "id"' in message
    assert 'CREATE UNIQUE INDEX "things_id_key" ON "public"."things" ("id")' in message
    # the open failed whole: its session (and locks) went with it
    again = Postgres(pg_dsn, "things", columns=Thing, create=False, primary_key="id")
    with pytest.raises(ConfigurationError):
        await again.open("x")


async def test_a_table_of_another_schema_and_create_false(pg_dsn: str) -> None:
    """The index goes with the table into its schema, and a later run with create=False
    finds it there (search_path does not lead to that schema)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE SCHEMA etl")
    finally:
        await conn.close()
    for create, records in [(True, [{"id": 1, "v": "a"}]), (False, [{"id": 1, "v": "b"}])]:
        sink = Postgres(pg_dsn, "etl.items", create=create, primary_key="id")
        await sink.open("x")
        try:
            await sink.write(records)
            await sink.commit("x", Checkpoint().to_json())
        finally:
            await sink.close()
    target = Target("postgres", pg_dsn)
    assert await target.records("etl.items") == [{"id": 1, "v": "b"}]
    assert await target.sql(
        "SELECT schemaname, indexname FROM pg_indexes WHERE indexname = 'items_id_key'"
    ) == [("etl", "items_id_key")]


# ---------------------------------------------------------------------- typed columns


async def test_typed_columns_with_a_primary_key(page_server: Any, pg_dsn: str) -> None:
    feed = Feed(12)
    server = await serve(page_server, feed.items)
    await run(server, Postgres(pg_dsn, "things", columns=Thing, primary_key="id"))
    feed.change(4, 7)
    await run(server, Postgres(pg_dsn, "things", columns=Thing, primary_key="id"), mode="resume")
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT id, name, version FROM things ORDER BY id")
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'things'::regclass AND contype = 'p'"
        )
    finally:
        await conn.close()
    assert [dict(r) for r in rows] == feed.latest()
    assert key == "PRIMARY KEY (id)"  # the key is a real column, the table's primary key


async def test_typed_columns_with_a_composite_key_and_only_key_columns(pg_dsn: str) -> None:
    class Pair(msgspec.Struct):
        a: int
        b: str

    sink = Postgres(pg_dsn, "pairs", columns=Pair, primary_key=("a", "b"))
    await sink.open("x")
    try:
        await sink.write([{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, {"a": 1, "b": "y"}])
        await sink.commit("x", Checkpoint().to_json())
        await sink.write([{"a": 1, "b": "x"}])  # nothing to update: DO NOTHING
        await sink.commit("x", Checkpoint().to_json())
    finally:
        await sink.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT a, b FROM pairs ORDER BY a, b")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [(1, "x"), (1, "y")]


# ---------------------------------------------------------------------- replace, crashes


async def test_replace_with_a_primary_key_empties_the_table(
    page_server: Any, target: Target
) -> None:
    old = Feed(9)
    server = await serve(page_server, old.items)
    await run(server, target.sink(primary_key="id"))
    new = [[{"id": 5, "name": "new 5", "version": 9}, {"id": 100, "name": "x", "version": 1}]]
    server.items = lambda n: new[n - 1] if n <= len(new) else []
    stats = await run(server, target.sink(primary_key="id"), mode="replace")
    assert stats.committed_pages == 1
    assert await target.records() == new[0]  # the old records are gone, 5 too
    held = await target.checkpoint()
    assert held is not None and len(held) == 1


async def test_a_killed_connection_upserts_nothing(pg_dsn: str) -> None:
    """Records COPYed into the staging table and not committed die with the session."""
    sink = Postgres(pg_dsn, primary_key="id")
    await sink.open("x")
    await sink.write([{"id": 1, "v": "a"}])
    await sink.commit("x", Checkpoint().to_json())
    await sink.write([{"id": 1, "v": "b"}, {"id": 2, "v": "b"}])  # staged, not committed
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            application_name(),
        )
    finally:
        await admin.close()
    await sink.close()
    again = Postgres(pg_dsn, primary_key="id")
    await again.open("x")  # a new session: its own, empty staging table
    try:
        await again.write([{"id": 3, "v": "c"}])
        await again.commit("x", Checkpoint().to_json())
    finally:
        await again.close()
    assert await Target("postgres", pg_dsn).records() == [{"id": 1, "v": "a"}, {"id": 3, "v": "c"}]


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize("make", [Postgres, SQLite], ids=["postgres", "sqlite"])
def test_primary_key_is_configuration_that_pickles(make: Any, tmp_path: Path) -> None:
    where = "postgresql://u:pw@localhost/db" if make is Postgres else str(tmp_path / "x.db")
    sink = make(where, "items", primary_key=("region", "id"))
    assert repr(sink).endswith("table='items', primary_key=('region', 'id'))")
    assert "pw" not in repr(sink)
    copy = pickle.loads(pickle.dumps(sink))
    assert copy.primary_key == ("region", "id") and repr(copy) == repr(sink)
    assert make(where, "items").primary_key is None
    assert repr(make(where, "items")).endswith("table='items')")  # the CLI reads it
    for bad in ["", (), ["id", "id"], ("id", 3)]:
        with pytest.raises(ConfigurationError, match="primary_key"):
            make(where, "items", primary_key=bad)


def test_a_typed_key_must_be_a_field() -> None:
    with pytest.raises(ConfigurationError, match=r"'uid' is not a field of columns=Thing"):
        Postgres("postgresql://localhost/db", columns=Thing, primary_key="uid")


def test_sqlite_json_paths_of_odd_names(tmp_path: Path) -> None:
    sink = SQLite(tmp_path / "x.db", primary_key="item id")
    assert sink._key_sql == "json_extract(data, '$.\"item id\"')"
    with pytest.raises(ConfigurationError, match="double quote"):
        SQLite(tmp_path / "x.db", primary_key='a"b')


# ---------------------------------------------------------------------- the newest version


async def test_version_keeps_the_newest_row_whatever_order_the_pages_commit_in(target, page_server):
    # page 2 holds the new form of record 1, page 3 an older one, committed after it (pages
    # of a known total arrive in any order): the row keeps the newest by its version
    pages = {
        1: [Feed.record(1, 1), Feed.record(2, 1)],
        2: [Feed.record(1, 3), Feed.record(3, 1)],
        3: [Feed.record(1, 2), Feed.record(2, 2)],
    }
    server = await serve(page_server, lambda n: pages.get(n, []))
    await run(server, target.sink(primary_key="id", version="version"), batch=2)
    held = {r["id"]: r["version"] for r in await target.records()}
    assert held == {1: 3, 2: 2, 3: 1}


async def test_version_within_one_batch_keeps_the_newest_too(target, page_server):
    pages = {1: [Feed.record(1, 5), Feed.record(1, 4), Feed.record(1, 2)]}
    server = await serve(page_server, lambda n: pages.get(n, []))
    await run(server, target.sink(primary_key="id", version="version"), batch=100)
    assert [(r["id"], r["version"]) for r in await target.records()] == [(1, 5)]


def test_version_needs_a_primary_key(tmp_path):
    with pytest.raises(ConfigurationError, match="needs primary_key"):
        SQLite(tmp_path / "x.db", version="updated_at")
    with pytest.raises(ConfigurationError, match="needs primary_key"):
        Postgres("postgresql://u@127.0.0.1:1/db", version="updated_at")


async def test_an_incremental_run_upserts_by_its_field(target, page_server):
    pages = {1: [{"id": 1, "at": 2}], 2: [{"id": 1, "at": 1}]}
    server = await serve(page_server, lambda n: pages.get(n, []))
    sink = target.sink(primary_key="id")
    await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(sink, checkpoint="sync", incremental=streampage.Incremental("at"))
    )
    assert sink.version == "at"  # set by the run: no version of its own
    assert [r["at"] for r in await target.records()] == [2]


class Sequenced(msgspec.Struct):
    id: int
    seq: int  # the name of the staging table's own column, once


async def test_a_struct_may_have_a_field_named_seq(pg_dsn, page_server):
    pages = {1: [{"id": 1, "seq": 1}, {"id": 1, "seq": 2}]}
    server = await serve(page_server, lambda n: pages.get(n, []))
    target = Target("postgres", pg_dsn)
    await run(server, target.sink(columns=Sequenced, primary_key="id", version="seq"))
    assert await target.sql("SELECT id, seq FROM items") == [(1, 2)]


def test_sqlite_refuses_key_names_its_json_paths_cannot_name(tmp_path):
    for name in ("a\\b", "a\tb", 'a"b'):
        with pytest.raises(ConfigurationError, match="cannot name a field"):
            SQLite(tmp_path / "x.db", primary_key=name)


async def test_sqlite_refuses_integer_keys_past_64_bits(tmp_path, page_server):
    # its JSON functions read them as floats: 2**64 - 1 and 2**64 - 2 would be one key
    pages = {1: [{"id": 2**64 - 1}, {"id": 2**64 - 2}]}
    server = await serve(page_server, lambda n: pages.get(n, []))
    target = Target("sqlite", str(tmp_path / "x.db"))
    with pytest.raises(streampage.SinkError, match="past 64 bits"):
        await run(server, target.sink(primary_key="id"))


@pytest.mark.parametrize(
    "page",
    [
        [{"id": decimal.Decimal("NaN")}],  # msgspec encodes it as the string "NaN"
        [{"id": decimal.Decimal("1")}, {"id": float("nan")}],
        [{"id": decimal.Decimal("1")}, {"id": decimal.Decimal("sNaN")}],
    ],
)
def test_keys_that_do_not_compare_are_judged_record_by_record(
    tmp_path: Path, page: list[Any]
) -> None:
    """The 64-bit check looks only at keys whose type is int. Its fast path compares the
    keys (min, max): a Decimal NaN compared by order raises decimal.InvalidOperation, and
    the page must still be judged by the loop, and staged, not fail with that."""
    sink = SQLite(tmp_path / "x.db", primary_key="id")
    assert sink.stage(page) == msgspec.json.Encoder().encode_lines(page)

"""The PostgreSQL sink against a real server (tests/pg_server.py starts one per session).

Each test gets a database of its own, so table and checkpoint names never collide.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import item
from yarl import URL

import streampage
from streampage import ConfigurationError
from streampage._checkpoint import Checkpoint
from streampage._errors import SinkError
from streampage.sinks import Sink
from streampage.sinks.postgres import Postgres

pytest_plugins = ["pg_server"]  # the postgres_dsn fixtures: a real server for the session


@pytest.fixture
async def dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield str(URL(postgres_dsn).with_path(f"/{name}"))
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows as another connection sees them (only what is committed)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def checkpoint(*pages: int) -> bytes:
    cp = Checkpoint()
    for n in pages:
        cp.commit("src", n, None)
    return cp.to_json()


def same_checkpoint(a: bytes | None, b: bytes) -> bool:
    """jsonb normalises the text (spacing, key order): compare what it means."""
    return a is not None and Checkpoint.from_json(a).to_json() == Checkpoint.from_json(b).to_json()


def test_is_a_sink() -> None:
    assert isinstance(Postgres("postgresql://localhost/db"), Sink)


async def test_write_commit_is_visible_and_checkpoint_round_trips(dsn: str) -> None:
    sink = Postgres(dsn)
    assert await sink.open("t") is None
    await sink.write([item(1), item(2)])
    await sink.write([item(3)])
    cp = checkpoint(1, 2, 3, 7)
    await sink.commit("t", cp)
    rows = await fetch(dsn, "SELECT data FROM items ORDER BY id")
    assert [msgspec.json.decode(r["data"]) for r in rows] == [item(1), item(2), item(3)]
    await sink.close()

    again = Postgres(dsn)
    stored = await again.open("t")
    assert same_checkpoint(stored, cp)
    assert Checkpoint.from_json(stored).pages("src").ranges() == [[1, 3], [7, 7]]
    await again.close()
    other = Postgres(dsn)
    assert await other.open("other") is None
    await other.close()


async def test_uncommitted_records_are_invisible_and_discarded_on_close(dsn: str) -> None:
    sink = Postgres(dsn)
    await sink.open("t")
    await sink.write([item(1)])
    first = checkpoint(1)
    await sink.commit("t", first)
    await sink.write([item(2), item(3)])  # no commit: the process "dies" here
    assert len(await fetch(dsn, "SELECT 1 FROM items")) == 1  # not visible to others
    await sink.close()

    assert [r["n"] for r in await fetch(dsn, "SELECT (data->>'id')::int AS n FROM items")] == [1]
    again = Postgres(dsn)
    assert same_checkpoint(await again.open("t"), first)
    await again.close()


async def test_a_killed_connection_commits_nothing(dsn: str) -> None:
    """A crash without close(): the server rolls the open transaction back."""
    sink = Postgres(dsn)
    await sink.open("t")
    await sink.write([item(1)])
    await sink.commit("t", checkpoint(1))
    await sink.write([item(2)])
    await fetch(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'streampage' AND datname = current_database()",
    )
    await sink.close()  # finds its connection dead; must not raise
    assert len(await fetch(dsn, "SELECT 1 FROM items")) == 1
    again = Postgres(dsn)
    assert same_checkpoint(await again.open("t"), checkpoint(1))
    await again.close()


async def test_commit_without_records_stores_the_checkpoint(dsn: str) -> None:
    sink = Postgres(dsn)
    await sink.open("t")
    await sink.write([])
    await sink.commit("t", checkpoint(1))
    await sink.commit("t", checkpoint(1, 2))  # an upsert, not a second row
    await sink.close()
    rows = await fetch(dsn, "SELECT name, checkpoint::text AS cp FROM streampage_checkpoints")
    assert [r["name"] for r in rows] == ["t"]
    assert same_checkpoint(rows[0]["cp"].encode(), checkpoint(1, 2))


class Thing(msgspec.Struct):
    id: int
    name: str
    price: float
    active: bool
    tags: list[str]
    meta: dict[str, Any] | None = None
    note: str | None = None


async def test_typed_columns_from_a_struct(dsn: str) -> None:
    sink = Postgres(dsn, "things", columns=Thing)
    await sink.open("t")
    await sink.write(
        [
            Thing(1, "a", 1.5, True, ["x"], {"k": [1, 2]}),
            {"id": 2, "name": "b", "price": 2, "active": False, "tags": [], "extra": "dropped"},
        ]
    )
    await sink.commit("t", checkpoint(1))
    await sink.close()

    columns = await fetch(
        dsn,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'things' ORDER BY ordinal_position",
    )
    assert [tuple(c) for c in columns] == [
        ("id", "bigint", "NO"),
        ("name", "text", "NO"),
        ("price", "double precision", "NO"),
        ("active", "boolean", "NO"),
        ("tags", "jsonb", "NO"),
        ("meta", "jsonb", "YES"),
        ("note", "text", "YES"),
    ]
    rows = await fetch(dsn, "SELECT * FROM things ORDER BY id")
    assert [dict(r) for r in rows] == [
        {
            "id": 1,
            "name": "a",
            "price": 1.5,
            "active": True,
            "tags": '["x"]',
            "meta": '{"k": [1, 2]}',
            "note": None,
        },
        {
            "id": 2,
            "name": "b",
            "price": 2.0,
            "active": False,
            "tags": "[]",
            "meta": None,
            "note": None,
        },
    ]


async def test_typed_records_are_validated(dsn: str) -> None:
    sink = Postgres(dsn, "things", columns=Thing)
    await sink.open("t")
    with pytest.raises(msgspec.ValidationError, match="Expected `int`") as caught:
        await sink.write([{"id": "one", "name": "a", "price": 1, "active": True, "tags": []}])
    assert any("things" in note for note in caught.value.__notes__)
    await sink.close()


async def test_jsonb_by_default(dsn: str) -> None:
    class Small(msgspec.Struct):
        id: int
        nested: dict[str, list[int]]

    records = [{"id": 1, "name": "é \u2603", "n": None, "deep": {"a": [1, 2.5, True]}}]
    sink = Postgres(dsn)
    await sink.open("t")
    await sink.write(records)
    await sink.write([Small(2, {"x": [3]})])
    await sink.commit("t", checkpoint(1))
    await sink.close()
    columns = await fetch(
        dsn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'items' ORDER BY ordinal_position",
    )
    assert [tuple(c) for c in columns] == [("id", "bigint"), ("data", "jsonb")]
    rows = await fetch(dsn, "SELECT id, data FROM items ORDER BY id")
    assert [r["id"] for r in rows] == [1, 2]  # bigserial
    assert msgspec.json.decode(rows[0]["data"]) == records[0]
    assert msgspec.json.decode(rows[1]["data"]) == {"id": 2, "nested": {"x": [3]}}
    names = await fetch(dsn, "SELECT data->'deep'->'a'->>1 AS v FROM items WHERE id = 1")
    assert names[0]["v"] == "2.5"


async def test_copy_of_100k_records_is_fast(dsn: str) -> None:
    n, batch = 100_000, 10_000
    records = [{"id": i, "name": f"item-{i}", "ok": True} for i in range(n)]
    sink = Postgres(dsn)
    await sink.open("t")
    started = time.perf_counter()
    for k in range(0, n, batch):
        await sink.write(records[k : k + batch])
        await sink.commit("t", checkpoint(k // batch + 1))
    elapsed = time.perf_counter() - started
    await sink.close()
    rows = await fetch(dsn, "SELECT count(*) AS n, count(DISTINCT data->>'id') AS d FROM items")
    assert (rows[0]["n"], rows[0]["d"]) == (n, n)
    print(f"\nPostgres sink, jsonb: {n} records in {elapsed:.2f}s = {n / elapsed:,.0f} rows/s")

    typed = Postgres(dsn, "typed", columns=Thing)
    things = [Thing(i, f"item-{i}", i / 2, True, []) for i in range(n)]
    await typed.open("typed")
    started = time.perf_counter()
    for k in range(0, n, batch):
        await typed.write(things[k : k + batch])
        await typed.commit("typed", checkpoint(k // batch + 1))
    elapsed = time.perf_counter() - started
    await typed.close()
    assert (await fetch(dsn, "SELECT count(*) AS n FROM typed"))[0]["n"] == n
    print(f"Postgres sink, typed: {n} records in {elapsed:.2f}s = {n / elapsed:,.0f} rows/s")


async def test_a_missing_table_is_created_in_its_schema(dsn: str) -> None:
    await fetch(dsn, "CREATE SCHEMA landing")
    assert (await fetch(dsn, "SELECT to_regclass('landing.events') AS t"))[0]["t"] is None
    sink = Postgres(dsn, "landing.events")
    assert "landing.events" in repr(sink)
    await sink.open("t")
    await sink.write([item(1)])
    await sink.commit("t", checkpoint(1))
    await sink.close()
    assert len(await fetch(dsn, "SELECT 1 FROM landing.events")) == 1
    assert len(await fetch(dsn, "SELECT 1 FROM landing.streampage_checkpoints")) == 1
    # the table is there now: opening again neither fails nor empties it
    again = Postgres(dsn, "landing.events")
    assert same_checkpoint(await again.open("t"), checkpoint(1))
    await again.close()
    assert len(await fetch(dsn, "SELECT 1 FROM landing.events")) == 1


async def test_create_false_requires_the_table(dsn: str) -> None:
    sink = Postgres(dsn, "absent", create=False)
    with pytest.raises(ConfigurationError, match=r"absent .*does not exist"):
        await sink.open("t")
    await sink.close()
    await fetch(dsn, "CREATE TABLE present (id bigserial PRIMARY KEY, data jsonb)")
    sink = Postgres(dsn, "present", create=False)
    await sink.open("t")
    await sink.write([item(1)])
    await sink.commit("t", checkpoint(1))
    await sink.close()
    assert len(await fetch(dsn, "SELECT 1 FROM present")) == 1


async def test_table_names_are_case_sensitive(dsn: str) -> None:
    sink = Postgres(dsn, "Landing.MixedCase")
    await fetch(dsn, 'CREATE SCHEMA "Landing"')
    await sink.open("t")
    await sink.write([item(1)])
    await sink.commit("t", checkpoint(1))
    await sink.close()
    assert len(await fetch(dsn, 'SELECT 1 FROM "Landing"."MixedCase"')) == 1


async def test_a_wrong_password_is_an_error_without_the_password(
    postgres_password_dsn: str,
) -> None:
    url = URL(postgres_password_dsn)
    good = Postgres(str(url), "pw_items")
    await good.open("t")  # the right password works: the role really checks it
    await good.close()

    secret = "Wr0ng-s3cret-p@ss"
    sink = Postgres(str(url.with_password(secret)))
    with pytest.raises(SinkError, match="password authentication failed") as caught:
        await sink.open("t")
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        text = f"{e} {e!r} {getattr(e, '__notes__', '')}"
        assert secret not in text and "s3cret" not in text
    assert "REDACTED" in str(caught.value)
    assert secret not in repr(sink)


async def test_unreachable_server_is_a_sink_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Postgres(f"postgresql://u:hunter2@127.0.0.1:{port}/db")
    with pytest.raises(SinkError, match="cannot connect") as caught:
        await sink.open("t")
    assert "hunter2" not in str(caught.value)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="must be a URL") as caught:
        Postgres("host=db user=u password=hunter2")
    assert "hunter2" not in str(caught.value)
    for table in ["", "a.b.c", "x; DROP TABLE y", "1abc", 'a"b']:
        with pytest.raises(ConfigurationError, match="identifier"):
            Postgres("postgresql://localhost/db", table)
    with pytest.raises(ConfigurationError, match=r"msgspec\.Struct"):
        Postgres("postgresql://localhost/db", columns=dict)


async def test_missing_asyncpg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg raises ImportError
    sink = Postgres("postgresql://localhost/db")
    with pytest.raises(ConfigurationError, match=r"pip install 'streampage\[postgres\]'"):
        await sink.open("t")


async def test_write_before_open_and_close_twice(dsn: str) -> None:
    sink = Postgres(dsn)
    await sink.close()  # before open: nothing to do
    with pytest.raises(RuntimeError, match="open"):
        await sink.write([item(1)])
    await sink.open("t")
    await sink.close()
    await sink.close()


async def test_into_postgres_end_to_end(page_server: Any, dsn: str) -> None:
    server = await page_server(pages=40, per_page=25)
    table = "e2e"
    s = streampage.stream(server.url, pages=streampage.PageNumber(stop=40))
    stats = await s.records("items").into(Postgres(dsn, table), batch=100, checkpoint="t")
    assert stats.committed_pages == 40
    rows = await fetch(dsn, f"SELECT (data->>'id')::int AS id, data FROM {table} ORDER BY 1")
    assert [r["id"] for r in rows] == list(range(1, 40 * 25 + 1))  # each record once
    assert [msgspec.json.decode(r["data"]) for r in rows] == [item(i) for i in range(1, 1001)]
    stored = await fetch(dsn, "SELECT checkpoint::text AS cp FROM streampage_checkpoints")
    assert len(Checkpoint.from_json(stored[0]["cp"])) == 40


async def test_into_postgres_resumes_after_a_failure_exactly_once(
    page_server: Any, dsn: str
) -> None:
    server = await page_server(pages=40, per_page=25, fail={23: 400})
    pages = streampage.PageNumber(stop=40)
    with pytest.raises(streampage.HTTPStatusError):
        await (
            streampage.stream(server.url, pages=pages)
            .records("items")
            .into(Postgres(dsn), batch=60, checkpoint="t")
        )
    committed = len(await fetch(dsn, "SELECT 1 FROM items"))
    assert 0 < committed < 1000

    server.fail.clear()
    stats = await (
        streampage.stream(server.url, pages=pages)
        .records("items")
        .into(Postgres(dsn), batch=60, checkpoint="t", resume=True)
    )
    rows = await fetch(dsn, "SELECT (data->>'id')::int AS id FROM items ORDER BY 1")
    assert [r["id"] for r in rows] == list(range(1, 1001))  # every record exactly once
    assert stats.committed_pages == 40 - committed // 25

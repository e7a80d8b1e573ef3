"""The PostgreSQL sink against a real server (tests/pg_server.py starts one per session).

Each test gets a database of its own, so table and checkpoint names never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import HANG, item
from yarl import URL

import streampage
from streampage import ConfigurationError
from streampage._checkpoint import Checkpoint
from streampage._errors import CheckpointInUseError, SinkError
from streampage.sinks import Sink
from streampage.sinks.postgres import Postgres, application_name, lock_key

pytest_plugins = ["pg_server"]  # the postgres_dsn fixtures: a real server for the session

ROOT = Path(__file__).resolve().parent.parent


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
    await fetch(  # and wait (up to 5 s) for the session to end: its lock goes with it
        dsn,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE application_name = $1 AND datname = current_database()",
        application_name(),
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
    assert [r["name"] for r in rows] == ["items/t"]  # the checkpoint "t" of table items
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


# ---------------------------------------------------------------------- checkpoints per table


async def test_each_table_has_its_own_checkpoint(dsn: str) -> None:
    a = Postgres(dsn, "a")
    await a.open("x")
    await a.write([item(1)])
    await a.commit("x", checkpoint(1))
    await a.close()

    c = Postgres(dsn, "c")
    assert await c.open("x") is None  # not table a's checkpoint "x"
    await c.close()
    names = await fetch(dsn, "SELECT name FROM streampage_checkpoints ORDER BY 1")
    assert [r["name"] for r in names] == ["a/x"]


async def test_two_tables_are_written_at_once(page_server: Any, dsn: str) -> None:
    a, c = Postgres(dsn, "a"), Postgres(dsn, "c")
    assert await a.open("x") is None
    assert await c.open("x") is None  # one checkpoint name, two tables: two locks
    await a.write([item(1)])
    await c.write([item(2)])  # two transactions open at once
    await c.commit("x", checkpoint(2))
    await a.commit("x", checkpoint(1))
    await a.close()
    await c.close()
    names = await fetch(dsn, "SELECT name FROM streampage_checkpoints ORDER BY 1")
    assert [r["name"] for r in names] == ["a/x", "c/x"]

    server = await page_server(pages=30, per_page=10)
    runs = [
        streampage.stream(server.url, pages=streampage.PageNumber(stop=30))
        .records("items")
        .into(Postgres(dsn, table), batch=10, checkpoint="both")
        for table in ("d", "e")
    ]
    async with asyncio.timeout(HANG):
        await asyncio.gather(*runs)
    for table in ("d", "e"):
        ids = await fetch(dsn, f"SELECT (data->>'id')::int AS id FROM {table} ORDER BY 1")
        assert [r["id"] for r in ids] == list(range(1, 301))


async def test_a_database_of_an_earlier_version_opens(dsn: str) -> None:
    """Earlier versions keyed checkpoints by name alone. Their table still opens; a bare
    checkpoint beside rows of the table stops the first write (not open: a replace may
    follow) with the statements that settle it."""
    await fetch(dsn, "CREATE TABLE items (id bigserial PRIMARY KEY, data jsonb)")
    await fetch(
        dsn,
        "CREATE TABLE streampage_checkpoints (name text PRIMARY KEY, "
        "checkpoint jsonb NOT NULL, updated_at timestamptz DEFAULT now())",
    )
    await fetch(dsn, """INSERT INTO items (data) VALUES ('{"id": 1}')""")
    await fetch(
        dsn,
        "INSERT INTO streampage_checkpoints VALUES ('default', $1::text::jsonb)",
        checkpoint(1).decode(),
    )

    fresh = Postgres(dsn, "other")  # a new table: the bare checkpoint cannot be its
    assert await fresh.open("default") is None
    await fresh.close()

    sink = Postgres(dsn)
    assert await sink.open("default") is None
    with pytest.raises(ConfigurationError, match="earlier streampage version") as caught:
        await sink.write([item(2)])
    await sink.close()
    assert len(await fetch(dsn, "SELECT 1 FROM items")) == 1
    claim = str(caught.value).split("claim it for the table with ")[1].split(";")[0]
    assert claim == (  # qualified: it holds whatever search_path the statement runs with
        """UPDATE "public"."streampage_checkpoints" SET name = 'items/default' """
        "WHERE name = 'default'"
    )
    await fetch(dsn, claim)
    assert same_checkpoint(await sink.open("default"), checkpoint(1))
    await sink.close()


# ---------------------------------------------------------------------- one writer per checkpoint

#: A run that holds checkpoint "x" of a table until it is killed: ``ready`` once open
#: (after ``replace`` and an uncommitted write of record 99, when asked).
HOLDER = """
import asyncio, sys
from streampage.sinks import Postgres

async def main(dsn, table, then):
    sink = Postgres(dsn, table)
    await sink.open("x")
    if then == "replace":
        await sink.replace("x")
        await sink.write([{"id": 99}])
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(*sys.argv[1:]))
"""


@contextlib.asynccontextmanager
async def holder(
    dsn: str, table: str = "items", then: str = "hold"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess holding checkpoint "x" of ``table`` (ready when this yields); killed
    at the end if the test has not killed it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        dsn,
        table,
        then,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(HANG):
            assert await proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def sigkill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL


async def test_a_second_open_of_a_checkpoint_names_its_holder(dsn: str) -> None:
    first = Postgres(dsn)
    await first.open("x")
    with pytest.raises(CheckpointInUseError) as caught:
        await Postgres(dsn).open("x")
    message = str(caught.value)
    assert f"another run holds checkpoint 'x' of table items at {dsn} (since " in message
    assert f", pid {os.getpid()} on host {socket.gethostname()})" in message
    other = Postgres(dsn)
    assert await other.open("y") is None  # another checkpoint of the table is free
    await other.close()
    await first.close()
    again = Postgres(dsn)  # closed: free again, at once
    await again.open("x")
    await again.close()


async def test_two_spellings_of_a_table_are_one_lock(dsn: str) -> None:
    first = Postgres(dsn, "items")
    await first.open("x")
    with pytest.raises(CheckpointInUseError):
        await Postgres(dsn, "public.items").open("x")
    await first.close()


async def test_a_lock_held_by_another_program_names_its_server_process(dsn: str) -> None:
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", lock_key("public.items/x"))
        with pytest.raises(CheckpointInUseError, match=r"\(since .*, server process \d+\)") as e:
            await Postgres(dsn).open("x")
        assert f"server process {other.get_server_pid()})" in str(e.value)
    finally:
        await other.close()


async def test_the_password_is_in_no_session_name(postgres_password_dsn: str) -> None:
    url = URL(postgres_password_dsn)
    assert url.password
    sink = Postgres(str(url), "pw_names")
    await sink.open("x")
    try:
        names = await fetch(str(url), "SELECT application_name AS a FROM pg_stat_activity")
        assert application_name() in [r["a"] for r in names]
        assert not [r["a"] for r in names if url.password in (r["a"] or "")]
    finally:
        await sink.close()


async def test_a_killed_holder_frees_the_checkpoint(dsn: str) -> None:
    """SIGKILL closes the holder's socket at once; its server process reads the end of
    the connection, exits and drops its locks a moment later (milliseconds, not a timeout:
    asynchronous to the kill, so the next open may race it). Polled, with a hard bound."""
    async with holder(dsn) as proc:
        with pytest.raises(CheckpointInUseError, match=f"pid {proc.pid} on host "):
            await Postgres(dsn).open("x")
        await sigkill(proc)
        killed = time.monotonic()
        sink = Postgres(dsn)
        while True:
            try:
                assert await sink.open("x") is None
                break
            except CheckpointInUseError:
                assert time.monotonic() - killed < 5, "the dead session still holds the lock"
                await asyncio.sleep(0.02)
        await sink.close()


# ---------------------------------------------------------------------- replace


async def test_replace_keeps_the_old_rows_until_the_first_commit(dsn: str) -> None:
    earlier = [("items", [item(1), item(2)], checkpoint(1)), ("other", [item(7)], checkpoint(7))]
    for table, records, cp in earlier:
        sink = Postgres(dsn, table)
        await sink.open("x")
        await sink.write(records)
        await sink.commit("x", cp)
        await sink.close()
    await fetch(dsn, "INSERT INTO streampage_checkpoints VALUES ('items/y', '{}')")

    async def ids(table: str = "items") -> list[int]:
        found = await fetch(dsn, f"SELECT (data->>'id')::int AS id FROM {table} ORDER BY 1")
        return [r["id"] for r in found]

    sink = Postgres(dsn)
    assert same_checkpoint(await sink.open("x"), checkpoint(1))
    await sink.replace("x")
    assert await ids() == [1, 2]
    await sink.write([item(10)])
    await sink.write([item(11)])
    assert await ids() == [1, 2]  # a reader never sees the table empty
    await sink.commit("x", checkpoint(10))
    assert await ids() == [10, 11]
    await sink.write([item(12)])  # the next commits add to it
    await sink.commit("x", checkpoint(10, 11))
    await sink.finish("x")  # nothing to do: the commits were final
    await sink.close()

    assert await ids() == [10, 11, 12]
    assert await ids("other") == [7]  # another table is not touched
    stored = await fetch(
        dsn, "SELECT name, checkpoint::text AS cp FROM streampage_checkpoints ORDER BY 1"
    )
    assert [r["name"] for r in stored] == ["items/x", "other/x"]
    assert same_checkpoint(stored[0]["cp"].encode(), checkpoint(10, 11))


async def test_into_with_mode_replace_starts_the_table_over(page_server: Any, dsn: str) -> None:
    old = await page_server(pages=4, per_page=3)
    pages = streampage.PageNumber()
    await streampage.stream(old.url, pages=pages).records("items").into(Postgres(dsn))
    new = await page_server(pages=2, per_page=3, shape="list")  # other pages, other shape
    stats = await (
        streampage.stream(new.url, pages=pages)
        .records(lambda data: data)  # the body is the list of records
        .into(Postgres(dsn), batch=1, mode="replace")
    )
    assert stats.committed_pages == 2
    found = await fetch(dsn, "SELECT (data->>'id')::int AS id FROM items ORDER BY 1")
    assert [r["id"] for r in found] == [1, 2, 3, 4, 5, 6]
    stored = await fetch(dsn, "SELECT name, checkpoint::text AS cp FROM streampage_checkpoints")
    assert [r["name"] for r in stored] == ["items/default"]
    assert len(Checkpoint.from_json(stored[0]["cp"].encode())) == 2


async def test_replace_after_an_uncommitted_write_is_an_error(dsn: str) -> None:
    sink = Postgres(dsn)
    with pytest.raises(RuntimeError, match="open"):
        await sink.replace("x")
    await sink.open("x")
    await sink.write([item(1)])
    with pytest.raises(RuntimeError, match="before write"):
        await sink.replace("x")
    await sink.close()


async def test_a_crash_after_replace_and_write_leaves_the_old_rows(dsn: str) -> None:
    sink = Postgres(dsn)
    await sink.open("x")
    await sink.write([item(1), item(2)])
    await sink.commit("x", checkpoint(1))
    await sink.close()
    async with holder(dsn, then="replace") as proc:  # replace(), write(), no commit
        await sigkill(proc)
    found = await fetch(dsn, "SELECT (data->>'id')::int AS id FROM items ORDER BY 1")
    assert [r["id"] for r in found] == [1, 2]
    again = Postgres(dsn)
    for _ in range(250):  # the dead session may hold its lock a moment (see above)
        with contextlib.suppress(CheckpointInUseError):
            stored = await again.open("x")
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the dead session still holds the lock after 5 s")
    assert same_checkpoint(stored, checkpoint(1))  # a resume goes on from it
    await again.close()


# ---------------------------------------------------------------------- one replace per table


async def ids_of(dsn: str, table: str) -> list[int]:
    found = await fetch(dsn, f"SELECT (data->>'id')::int AS id FROM {table} ORDER BY id")
    return [r["id"] for r in found]


async def test_replace_fails_while_another_checkpoint_of_the_table_is_written(
    page_server: Any, dsn: str
) -> None:
    """A replace empties the table under every checkpoint of it: while a run on another
    checkpoint writes the table, a replace fails at once, naming that run (and its
    checkpoint, once committed), and deletes nothing; that run's rows and checkpoint stay
    whole as it goes on."""
    writing = Postgres(dsn)
    assert await writing.open("x") is None
    starting = Postgres(dsn)  # a run that has committed nothing yet
    assert await starting.open("y") is None

    server = await page_server(pages=4, per_page=3)
    runs: list[Any] = []

    async def replace() -> CheckpointInUseError:
        sink = Postgres(dsn)
        runs.append(sink)
        with pytest.raises(CheckpointInUseError) as caught:
            await (
                streampage.stream(server.url, pages=streampage.PageNumber())
                .records("items")
                .into(sink, mode="replace")
            )
        assert sink._conn is None  # closed, its locks given back
        return caught.value

    error = await replace()
    message = str(error)
    assert f"another run holds table items at {dsn} to write into it (since " in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}; since " in message
    assert server.requests == []  # failed before the first page, at replace

    await writing.write([item(1), item(2)])
    await writing.commit("x", checkpoint(1))
    await starting.close()
    error = await replace()  # x is committed: its checkpoint is named now
    assert error.holder is not None and error.holder.startswith("checkpoint 'x', since ")

    await writing.write([item(3)])  # the other run goes on: nothing of it was deleted
    await writing.commit("x", checkpoint(1, 2))
    await writing.close()
    assert await ids_of(dsn, "items") == [1, 2, 3]
    stored = await fetch(dsn, "SELECT name, checkpoint::text AS cp FROM streampage_checkpoints")
    assert [r["name"] for r in stored] == ["items/x"]
    assert same_checkpoint(stored[0]["cp"].encode(), checkpoint(1, 2))

    stats = await (  # alone on the table now: the replace goes through
        streampage.stream(server.url, pages=streampage.PageNumber())
        .records("items")
        .into(Postgres(dsn), mode="replace")
    )
    assert stats.committed_pages == 4
    assert await ids_of(dsn, "items") == list(range(1, 13))
    names = await fetch(dsn, "SELECT name FROM streampage_checkpoints")
    assert [r["name"] for r in names] == ["items/default"]


async def test_a_failed_replace_still_holds_its_share_of_the_table(dsn: str) -> None:
    a, b = Postgres(dsn), Postgres(dsn)
    await a.open("a")
    await b.open("b")
    with pytest.raises(CheckpointInUseError, match="to write into it"):
        await b.replace("b")
    with pytest.raises(CheckpointInUseError, match="to write into it"):
        await a.replace("a")  # b's failed replace did not leave the table to a
    await b.close()
    await a.replace("a")  # b is gone: a has the table to itself
    await a.replace("a")  # again: still its own
    await a.close()
    again = Postgres(dsn)  # every lock of a's session was given back
    await again.open("a")
    await again.replace("a")
    await again.close()


async def test_no_run_starts_while_a_replace_holds_the_table(dsn: str) -> None:
    replacing = Postgres(dsn)
    await replacing.open("x")
    await replacing.replace("x")
    for sink, name in [(Postgres(dsn), "y"), (Postgres(dsn, "public.items"), "x")]:
        with pytest.raises(CheckpointInUseError) as caught:
            await sink.open(name)
        message = str(caught.value)
        assert "to replace it (since " in message
        assert f"pid {os.getpid()} on host {socket.gethostname()})" in message
    other = Postgres(dsn, "other")  # another table of the database is free
    await other.open("y")
    await other.close()

    await replacing.write([item(2)])
    await replacing.commit("x", checkpoint(2))
    await replacing.close()
    assert await ids_of(dsn, "items") == [2]
    after = Postgres(dsn)  # the replace is over: the table is free again, at once
    assert await after.open("y") is None
    await after.close()


async def test_two_checkpoints_of_one_table_are_written_at_once(page_server: Any, dsn: str) -> None:
    a, b = Postgres(dsn), Postgres(dsn)
    assert await a.open("a") is None
    assert await b.open("b") is None  # both hold the table, shared
    await a.write([item(1)])
    await b.write([item(2)])  # two transactions open at once
    await b.commit("b", checkpoint(2))
    await a.commit("a", checkpoint(1))
    await a.close()
    await b.close()

    server = await page_server(pages=20, per_page=10)
    runs = [
        streampage.stream(server.url, pages=streampage.PageNumber(stop=20))
        .records("items")
        .into(Postgres(dsn, "shared"), batch=10, checkpoint=name)
        for name in ("c", "d")
    ]
    async with asyncio.timeout(HANG):
        await asyncio.gather(*runs)
    assert await ids_of(dsn, "shared") == sorted([*range(1, 201)] * 2)
    names = await fetch(dsn, "SELECT name FROM streampage_checkpoints ORDER BY 1")
    assert [r["name"] for r in names] == ["items/a", "items/b", "shared/c", "shared/d"]


# ---------------------------------------------------------------------- the table's schema


async def test_checkpoints_are_kept_in_the_schema_of_the_table(page_server: Any, dsn: str) -> None:
    """With ``search_path=etl,data`` (both holding checkpoints), a table of ``data``
    named without its schema has its checkpoints in ``data``, not in the first
    ``streampage_checkpoints`` of the path: a run on ``t2`` resumes as ``data.t2``, and
    the other way round, every record once."""
    await fetch(dsn, "CREATE SCHEMA etl")
    await fetch(dsn, "CREATE SCHEMA data")
    await fetch(dsn, f"ALTER DATABASE {URL(dsn).path.lstrip('/')} SET search_path = etl, data")
    await fetch(dsn, "CREATE TABLE data.t2 (id bigserial PRIMARY KEY, data jsonb)")
    await fetch(dsn, "CREATE TABLE data.t3 (id bigserial PRIMARY KEY, data jsonb)")
    await committed_run(dsn, "data.t3")  # streampage_checkpoints in data ...
    await committed_run(dsn, "etl.in_etl")  # ... and in etl, first in the path
    found = await fetch(
        dsn,
        "SELECT relnamespace::regnamespace::text AS s FROM pg_class "
        "WHERE oid = to_regclass('streampage_checkpoints')",
    )
    assert found[0]["s"] == "etl"  # the first of the path: where earlier versions looked

    server = await page_server(pages=20, per_page=5, fail={13: 400})
    pages = streampage.PageNumber(stop=20)
    await fetch(dsn, "TRUNCATE data.t3")  # its checkpoint "x" stays, as another's
    for first, then in [("t2", "data.t2"), ("data.t3", "t3")]:
        server.fail[13] = 400
        with pytest.raises(streampage.HTTPStatusError):
            await (
                streampage.stream(server.url, pages=pages)
                .records("items")
                .into(Postgres(dsn, first), batch=10, checkpoint="t")
            )
        done = len(await ids_of(dsn, f"data.{first.split('.')[-1]}"))
        assert 0 < done < 100
        server.fail.clear()
        stats = await (
            streampage.stream(server.url, pages=pages)
            .records("items")
            .into(Postgres(dsn, then), batch=10, checkpoint="t", resume=True)
        )
        assert stats.resumed_pages == done // 5, f"{first} then {then}"
        assert await ids_of(dsn, then) == list(range(1, 101)), f"{first} then {then}"
    stored = await fetch(dsn, "SELECT name FROM data.streampage_checkpoints ORDER BY 1")
    assert [r["name"] for r in stored] == ["t2/t", "t3/t", "t3/x"]
    stored = await fetch(dsn, "SELECT name FROM etl.streampage_checkpoints ORDER BY 1")
    assert [r["name"] for r in stored] == ["in_etl/x"]


async def committed_run(dsn: str, table: str) -> None:
    sink = Postgres(dsn, table)
    await sink.open("x")
    await sink.write([item(1)])
    await sink.commit("x", checkpoint(1))
    await sink.close()


async def test_a_new_table_goes_to_the_first_schema_of_the_path_that_exists(dsn: str) -> None:
    """Where CREATE TABLE puts it: ``nowhere`` does not exist, so ``data``; and its
    checkpoints and locks with it."""
    await fetch(dsn, "CREATE SCHEMA data")
    await fetch(
        dsn, f"ALTER DATABASE {URL(dsn).path.lstrip('/')} SET search_path = nowhere, data, public"
    )
    first = Postgres(dsn, "fresh")
    await first.open("x")
    with pytest.raises(CheckpointInUseError):
        await Postgres(dsn, "data.fresh").open("x")  # one table, one lock
    await first.write([item(1)])
    await first.commit("x", checkpoint(1))
    await first.close()
    assert await ids_of(dsn, "data.fresh") == [1]
    assert len(await fetch(dsn, "SELECT 1 FROM data.streampage_checkpoints")) == 1
    assert (await fetch(dsn, "SELECT to_regclass('public.fresh') AS t"))[0]["t"] is None
    again = Postgres(dsn, "data.fresh")
    assert same_checkpoint(await again.open("x"), checkpoint(1))
    await again.close()


async def test_no_schema_of_the_path_to_create_in_is_a_configuration_error(dsn: str) -> None:
    await fetch(dsn, f"ALTER DATABASE {URL(dsn).path.lstrip('/')} SET search_path = nowhere")
    with pytest.raises(ConfigurationError, match=r"no schema of search_path \(nowhere\)"):
        await Postgres(dsn, "fresh").open("x")


async def test_a_checkpoint_an_earlier_version_kept_in_another_schema_is_found(dsn: str) -> None:
    """Earlier versions found ``streampage_checkpoints`` through ``search_path``, so the
    checkpoint of ``data.t2`` named ``t2`` may sit in ``etl``. Beside rows in the table,
    the first write stops with the statements that move it, rather than write twice."""
    await fetch(dsn, "CREATE SCHEMA etl")
    await fetch(dsn, "CREATE SCHEMA data")
    await fetch(dsn, f"ALTER DATABASE {URL(dsn).path.lstrip('/')} SET search_path = etl, data")
    await fetch(dsn, "CREATE TABLE data.t2 (id bigserial PRIMARY KEY, data jsonb)")
    await fetch(dsn, """INSERT INTO data.t2 (data) VALUES ('{"id": 1}')""")
    await fetch(
        dsn,
        "CREATE TABLE etl.streampage_checkpoints (name text PRIMARY KEY, "
        "checkpoint jsonb NOT NULL, updated_at timestamptz DEFAULT now())",
    )
    await fetch(
        dsn,
        "INSERT INTO etl.streampage_checkpoints VALUES ('t2/t', $1::text::jsonb)",
        checkpoint(1).decode(),
    )
    qualified = Postgres(dsn, "data.t2")  # named with its schema: an earlier version too
    assert await qualified.open("t") is None
    await qualified.write([item(2)])  # so nothing is in the way
    await qualified.close()

    sink = Postgres(dsn, "t2")
    assert await sink.open("t") is None
    with pytest.raises(ConfigurationError, match="earlier streampage version") as caught:
        await sink.write([item(2)])
    await sink.close()
    move = str(caught.value).split("move it with ")[1].split("; if it is not")[0]
    assert move == (
        'INSERT INTO "data"."streampage_checkpoints" SELECT * FROM "etl"."streampage_checkpoints"'
        " WHERE name = 't2/t'; DELETE FROM \"etl\".\"streampage_checkpoints\" WHERE name = 't2/t'"
    )
    for statement in move.split("; "):
        await fetch(dsn, statement)
    assert same_checkpoint(await sink.open("t"), checkpoint(1))
    await sink.close()


async def test_records_go_as_copy_text_and_come_back_as_they_were(dsn: str) -> None:
    """Records go to the jsonb column as COPY's text format (backslashes doubled): every
    character that format or JSON escapes comes back as it was."""
    tricky = ["back\\slash", 'quote "', "tab\tnew\nline\r", "\\N", "\\.", "é ☃ 𝄞", "\x01\x1f"]
    records = [
        {"id": i, "text": t, "nested": {"list": [t, i, None, True, 1.5]}}
        for i, t in enumerate(tricky)
    ]
    records.append(None)  # a record may be any JSON value
    records.append(["a", "\\"])
    sink = Postgres(dsn, table="escapes")
    await sink.open("run")
    await sink.write(records[:3])
    await sink.write(records[3:])
    await sink.commit("run", b'{"n":1}')
    await sink.close()
    rows = await fetch(dsn, "SELECT data::text AS data FROM escapes ORDER BY id")
    assert [msgspec.json.decode(r["data"]) for r in rows] == records

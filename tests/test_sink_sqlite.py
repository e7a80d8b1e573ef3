"""The SQLite sink on real database files: checkpoints per table, one writer per checkpoint
(a file lock the kernel frees when its holder dies), and replace in the first commit.

Each test writes into its own ``tmp_path``. Crashes are real: a subprocess opens the sink,
says ``ready`` and is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import HANG, item

import streampage
from streampage import ConfigurationError, PageNumber
from streampage._checkpoint import Checkpoint
from streampage._errors import CheckpointInUseError
from streampage.sinks import Sink, SQLite
from streampage.sinks._lock import FileLock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and SIGKILL are POSIX")

ROOT = Path(__file__).resolve().parent.parent

#: A run that holds checkpoint "x" of a table until it is killed: ``ready`` once open
#: (after ``replace`` and an uncommitted write of record 99, when asked).
HOLDER = """
import asyncio, sys
from streampage.sinks import SQLite

async def main(path, table, then):
    sink = SQLite(path, table)
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
    path: Path, table: str = "items", then: str = "hold"
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess holding checkpoint "x" of ``table`` (ready when this yields); killed
    at the end if the test has not killed it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(path),
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


def rows(path: Path, table: str = "items") -> list[Any]:
    """The records of ``table`` as another connection sees them (only what is committed)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [json.loads(r[0]) for r in db.execute(f"SELECT data FROM {table} ORDER BY id")]


def checkpoints(path: Path) -> dict[str, str]:
    """Every row of streampage_checkpoints: its key and its checkpoint."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT name, checkpoint FROM streampage_checkpoints"))


async def committed(path: Path, table: str, records: list[Any], checkpoint: bytes) -> None:
    """A run that wrote ``records`` into ``table`` and committed them as checkpoint "x"."""
    sink = SQLite(path, table)
    await sink.open("x")
    await sink.write(records)
    await sink.commit("x", checkpoint)
    await sink.close()


def test_is_a_sink() -> None:
    assert isinstance(SQLite("x.db"), Sink)


# ---------------------------------------------------------------------- checkpoints per table


async def test_each_table_of_a_database_has_its_own_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "a", [item(1)], b'{"run":"a"}')

    c = SQLite(db, "c")
    assert await c.open("x") is None  # not table a's checkpoint "x"
    await c.write([item(2)])
    await c.commit("x", b'{"run":"c"}')
    await c.close()

    assert checkpoints(db) == {"a/x": '{"run":"a"}', "c/x": '{"run":"c"}'}
    again = SQLite(db, "a")
    assert await again.open("x") == b'{"run":"a"}'
    await again.close()


async def test_a_second_table_gets_every_record_through_into(
    page_server: Any, tmp_path: Path
) -> None:
    """Issue 10: ``-o sqlite:///db?table=a`` then ``table=c`` under one checkpoint name
    wrote 0 rows to c (a's checkpoint said every page was done)."""
    server = await page_server(pages=4, per_page=3)
    db = tmp_path / "out.db"
    for table in ("a", "c"):
        stats = await (
            streampage.stream(server.url, pages=PageNumber())
            .records("items")
            .into(SQLite(db, table), batch=2)
        )
        assert stats.committed_pages == 4
    assert rows(db, "a") == rows(db, "c") == [item(i) for i in range(1, 13)]
    assert sorted(checkpoints(db)) == ["a/default", "c/default"]


async def test_table_names_are_case_insensitive_as_in_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "Items", [item(1)], b"{}")
    lower = SQLite(db, "items")  # the same table to SQLite, so the same checkpoint
    assert await lower.open("x") == b"{}"
    with pytest.raises(CheckpointInUseError):
        await SQLite(db, "ITEMS").open("x")
    await lower.close()


async def test_a_database_of_an_earlier_version_opens(tmp_path: Path) -> None:
    """Earlier versions keyed checkpoints by name alone. Their table still opens; a bare
    checkpoint beside rows of the table stops the first write (not open: a replace may
    follow) with the statements that settle it."""
    db = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, data TEXT)")
        conn.execute(
            "CREATE TABLE streampage_checkpoints (name TEXT PRIMARY KEY, checkpoint TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO items (data) VALUES ('{\"id\": 1}')")
        conn.execute("INSERT INTO streampage_checkpoints VALUES ('default', '{\"old\":1}')")

    fresh = SQLite(db, "other")  # a new table: the bare checkpoint cannot be its
    assert await fresh.open("default") is None
    await fresh.close()

    sink = SQLite(db)
    assert await sink.open("default") is None
    with pytest.raises(ConfigurationError, match="earlier streampage version") as caught:
        await sink.write([item(2)])
    with pytest.raises(ConfigurationError, match="earlier streampage version"):
        await sink.commit("default", b"{}")
    await sink.close()
    assert rows(db) == [{"id": 1}]
    claim = str(caught.value).split("claim it for the table with ")[1].split(";")[0]
    assert claim == (
        "UPDATE streampage_checkpoints SET name = 'items/default' WHERE name = 'default'"
    )
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(claim)
    assert await sink.open("default") == b'{"old":1}'
    await sink.close()


async def test_replace_needs_no_claim_of_an_earlier_versions_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, data TEXT)")
        conn.execute(
            "CREATE TABLE streampage_checkpoints (name TEXT PRIMARY KEY, checkpoint TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO items (data) VALUES ('{\"id\": 1}')")
        conn.execute("INSERT INTO streampage_checkpoints VALUES ('default', '{\"old\":1}')")
    sink = SQLite(db)
    assert await sink.open("default") is None
    await sink.replace("default")
    await sink.write([item(2)])
    await sink.commit("default", b'{"new":1}')
    await sink.close()
    assert rows(db) == [item(2)]
    assert checkpoints(db)["items/default"] == '{"new":1}'


# ---------------------------------------------------------------------- one writer per checkpoint


async def test_a_second_open_of_a_checkpoint_names_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    first = SQLite(db)
    await first.open("x")
    with pytest.raises(CheckpointInUseError) as caught:
        await SQLite(db).open("x")
    message = str(caught.value)
    assert f"another run holds checkpoint 'x' of table items in {db}" in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert caught.value.holder is not None and caught.value.holder.startswith("since ")
    other = SQLite(db)
    assert await other.open("y") is None  # another checkpoint of the table is free
    await other.close()
    await first.close()
    again = SQLite(db)  # closed: free again
    await again.open("x")
    await again.close()


async def test_a_held_checkpoint_fails_before_touching_the_database(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    lock = FileLock(SQLite(db).lock_path("x"), "checkpoint 'x'")
    lock.acquire()  # another run, as far as the sink can tell
    try:
        with pytest.raises(CheckpointInUseError):
            await SQLite(db).open("x")
        assert not db.exists()
    finally:
        lock.release()
    assert SQLite(db).lock_path("x") == tmp_path / ".new.db.streampage" / "items.x.lock"


def test_every_checkpoint_name_has_a_lock_file_of_its_own(tmp_path: Path) -> None:
    sink = SQLite(tmp_path / "out.db", "t")
    names = ["a/b", "a%2Fb", "a_b", "..", "é", "x" * 300, "x" * 299 + "y"]
    files = [sink.lock_path(n) for n in names]
    assert len(set(files)) == len(names)
    for f in files:
        assert f.parent == tmp_path / ".out.db.streampage" and len(f.name) < 100


async def test_two_tables_of_a_database_are_written_at_once(
    page_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "out.db"
    a, c = SQLite(db, "a"), SQLite(db, "c")
    assert await a.open("x") is None
    assert await c.open("x") is None  # one checkpoint name, two tables: two locks
    await a.write([item(1)])  # a's transaction takes the write lock ...
    committing = asyncio.ensure_future(c.commit("x", b'{"c":1}'))  # ... c's waits for it
    await a.commit("x", b'{"a":1}')
    await committing
    await a.close()
    await c.close()
    assert checkpoints(db) == {"a/x": '{"a":1}', "c/x": '{"c":1}'}

    server = await page_server(pages=30, per_page=10)
    runs = [
        streampage.stream(server.url, pages=PageNumber(stop=30))
        .records("items")
        .into(SQLite(db, table), batch=10, checkpoint="both")
        for table in ("d", "e")
    ]
    async with asyncio.timeout(HANG):
        await asyncio.gather(*runs)
    for table in ("d", "e"):
        assert sorted(r["id"] for r in rows(db, table)) == list(range(1, 301))


async def test_a_killed_holder_frees_the_checkpoint_at_once(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    async with holder(db) as proc:
        with pytest.raises(CheckpointInUseError, match=f"pid {proc.pid} on host "):
            await SQLite(db).open("x")
        await sigkill(proc)
        sink = SQLite(db)
        assert await sink.open("x") is None  # at once: no retry, no timeout
        await sink.close()


# ---------------------------------------------------------------------- replace


async def test_replace_keeps_the_old_rows_until_the_first_commit(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "items", [item(1), item(2)], b'{"old":1}')
    await committed(db, "other", [item(7)], b'{"other":1}')
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # another checkpoint of items
        conn.execute("INSERT INTO streampage_checkpoints VALUES ('items/y', '{}')")

    sink = SQLite(db)
    assert await sink.open("x") == b'{"old":1}'
    await sink.replace("x")
    assert rows(db) == [item(1), item(2)]
    await sink.write([item(10)])
    await sink.write([item(11)])
    assert rows(db) == [item(1), item(2)]  # a reader never sees the table empty
    await sink.commit("x", b'{"new":1}')
    assert rows(db) == [item(10), item(11)]
    await sink.write([item(12)])  # the next commits add to it
    await sink.commit("x", b'{"new":2}')
    await sink.close()

    assert rows(db) == [item(10), item(11), item(12)]
    assert rows(db, "other") == [item(7)]  # another table is not touched
    assert checkpoints(db) == {"items/x": '{"new":2}', "other/x": '{"other":1}'}


async def test_into_with_mode_replace_starts_the_table_over(
    page_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "out.db"
    old = await page_server(pages=4, per_page=3)
    await streampage.stream(old.url, pages=PageNumber()).records("items").into(SQLite(db))
    new = await page_server(pages=2, per_page=3, shape="list")  # other pages, other shape
    stats = await (
        streampage.stream(new.url, pages=PageNumber())
        .records(lambda data: data)  # the body is the list of records
        .into(SQLite(db), batch=1, mode="replace")
    )
    assert stats.committed_pages == 2
    assert rows(db) == [item(i) for i in range(1, 7)]
    stored = checkpoints(db)
    assert list(stored) == ["items/default"]
    assert len(Checkpoint.from_json(stored["items/default"].encode())) == 2


async def test_replace_then_a_commit_without_records_empties_the_table(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "items", [item(1)], b'{"old":1}')
    sink = SQLite(db)
    await sink.open("x")
    await sink.replace("x")
    await sink.commit("x", b'{"new":1}')
    await sink.finish("x")  # nothing to do: the commit was final
    await sink.close()
    assert rows(db) == []
    assert checkpoints(db) == {"items/x": '{"new":1}'}


async def test_replace_after_an_uncommitted_write_is_an_error(tmp_path: Path) -> None:
    sink = SQLite(tmp_path / "out.db")
    with pytest.raises(RuntimeError, match="open"):
        await sink.replace("x")
    await sink.open("x")
    await sink.write([item(1)])
    with pytest.raises(RuntimeError, match="before write"):
        await sink.replace("x")
    await sink.close()


async def test_a_crash_after_replace_and_write_leaves_the_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "items", [item(1), item(2)], b'{"old":1}')
    async with holder(db, then="replace") as proc:  # replace(), write(), no commit
        await sigkill(proc)
    assert rows(db) == [item(1), item(2)]
    assert checkpoints(db) == {"items/x": '{"old":1}'}
    sink = SQLite(db)
    assert await sink.open("x") == b'{"old":1}'  # a resume goes on from it
    await sink.close()


# ---------------------------------------------------------------------- one replace per table


async def test_replace_fails_while_another_checkpoint_of_the_table_is_written(
    page_server: Any, tmp_path: Path
) -> None:
    """A replace empties the table under every checkpoint of it: while a run on another
    checkpoint writes the table, a replace fails at once, naming that run, and deletes
    nothing; that run's rows and checkpoint stay whole as it goes on."""
    db = tmp_path / "out.db"
    writing = SQLite(db)
    assert await writing.open("x") is None
    await writing.write([item(1), item(2)])
    await writing.commit("x", b'{"x":1}')

    server = await page_server(pages=4, per_page=3)
    with pytest.raises(CheckpointInUseError) as caught:
        await (
            streampage.stream(server.url, pages=PageNumber())
            .records("items")
            .into(SQLite(db), mode="replace")
        )
    message = str(caught.value)
    assert f"another run holds table items in {db} to write into it (checkpoint 'x', " in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert server.requests == []  # failed before the first page, at replace

    await writing.write([item(3)])  # the other run goes on: nothing of it was deleted
    await writing.commit("x", b'{"x":2}')
    await writing.close()
    assert rows(db) == [item(1), item(2), item(3)]
    assert checkpoints(db) == {"items/x": '{"x":2}'}

    stats = await (  # alone on the table now: the replace goes through
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(SQLite(db), mode="replace")
    )
    assert stats.committed_pages == 4
    assert rows(db) == [item(i) for i in range(1, 13)]
    assert list(checkpoints(db)) == ["items/default"]


async def test_a_replace_names_a_writer_of_another_process_until_it_is_killed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.db"
    async with holder(db) as proc:  # holds checkpoint "x" of items, in another process
        sink = SQLite(db)
        await sink.open("default")
        with pytest.raises(CheckpointInUseError, match="to write into it") as caught:
            await sink.replace("default")
        assert caught.value.holder is not None
        assert caught.value.holder.startswith("checkpoint 'x', since ")
        assert f"pid {proc.pid} on host " in caught.value.holder
        await sink.close()
        await sigkill(proc)
        replacing = SQLite(db)  # the kernel freed its table lock: at once, no timeout
        await replacing.open("default")
        await replacing.replace("default")
        await replacing.close()


async def test_a_failed_replace_still_holds_its_share_of_the_table(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    a, b = SQLite(db), SQLite(db)
    await a.open("a")
    await b.open("b")
    with pytest.raises(CheckpointInUseError, match="checkpoint 'a'"):
        await b.replace("b")
    with pytest.raises(CheckpointInUseError, match="checkpoint 'b'"):
        await a.replace("a")  # b's failed replace did not leave the table to a
    await b.close()
    await a.replace("a")  # b is gone: a has the table to itself
    await a.close()


async def test_no_run_starts_while_a_replace_holds_the_table(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await committed(db, "items", [item(1)], b'{"old":1}')
    replacing = SQLite(db)
    await replacing.open("x")
    await replacing.replace("x")
    for name in ("y", "x"):
        with pytest.raises(CheckpointInUseError) as caught:
            await SQLite(db).open(name)
        message = str(caught.value)
        assert f"another run holds table items in {db} to replace it (since " in message
        assert f"pid {os.getpid()} on host {socket.gethostname()})" in message
    other = SQLite(db, "other")  # another table of the database is free
    await other.open("y")
    await other.close()

    await replacing.write([item(2)])
    await replacing.commit("x", b'{"new":1}')
    await replacing.close()
    assert rows(db) == [item(2)]
    after = SQLite(db)  # the replace is over: the table is free again
    assert await after.open("y") is None
    await after.close()
    assert FileLock.holder_of(SQLite(db).table_lock_path()) is None  # its note went with it


async def test_two_checkpoints_of_one_table_are_written_at_once(
    page_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "out.db"
    a, b = SQLite(db), SQLite(db)
    assert await a.open("a") is None
    assert await b.open("b") is None  # both hold the table, shared
    await a.write([item(1)])
    committing = asyncio.ensure_future(b.commit("b", b'{"b":1}'))  # waits for a's commit
    await a.commit("a", b'{"a":1}')
    await committing
    await a.close()
    await b.close()
    assert checkpoints(db) == {"items/a": '{"a":1}', "items/b": '{"b":1}'}

    server = await page_server(pages=20, per_page=10)
    runs = [
        streampage.stream(server.url, pages=PageNumber(stop=20))
        .records("items")
        .into(SQLite(db, "both"), batch=10, checkpoint=name)
        for name in ("c", "d")
    ]
    async with asyncio.timeout(HANG):
        await asyncio.gather(*runs)
    assert sorted(r["id"] for r in rows(db, "both")) == sorted([*range(1, 201)] * 2)
    assert sorted(checkpoints(db)) == ["both/c", "both/d", "items/a", "items/b"]


def test_shared_file_locks(tmp_path: Path) -> None:
    path = tmp_path / "t.lock"
    one, two = FileLock(path, "t", shared=True), FileLock(path, "t", shared=True)
    one.acquire()
    two.acquire()  # shared: both hold it
    assert not one.exclusive() and one.held and not one.is_exclusive
    assert FileLock.holder_of(path) is None  # shared holders write no note
    two.release()
    assert one.exclusive() and one.is_exclusive
    assert FileLock.holder_of(path) == FileLock.holder_of(path, alive=False)
    assert f"pid {os.getpid()}" in str(FileLock.holder_of(path))
    with pytest.raises(CheckpointInUseError, match=f"another run holds t .*pid {os.getpid()}"):
        two.acquire()
    with pytest.raises(CheckpointInUseError):
        FileLock(path, "t").acquire()
    one.release()
    assert path.read_bytes() == b""  # released: no holder to name
    two.acquire()
    two.release()


def test_the_note_of_a_killed_holder_names_no_one(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "x.lock"
    code = "import sys; from pathlib import Path; from streampage.sinks import FileLock; "
    code += "FileLock(Path(sys.argv[1]), 'x').acquire()"  # exits holding it: its note stays
    subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert FileLock.holder_of(path, alive=False) is not None
    assert FileLock.holder_of(path) is None  # its process is gone, and its lock with it


def test_reserved_table_names() -> None:
    for table in ["streampage_checkpoints", "sqlite_master", "SQLITE_x"]:
        with pytest.raises(ConfigurationError, match="reserved"):
            SQLite("x.db", table)


@pytest.mark.parametrize("count", [1, 255, 256, 257, 600])
async def test_many_rows_a_statement_keep_every_record_in_order(tmp_path: Path, count: int) -> None:
    """Records go in many to an INSERT (256, then halves): any number of them, in order,
    each the JSON text it was before, one a row."""
    db = tmp_path / "out.db"
    records = [{"id": i, "text": f'é \\ " \n {i}', "n": [i, i / 3]} for i in range(count)]
    sink = SQLite(db)
    await sink.open("run")
    await sink.write(records[: count // 2])
    await sink.write(records[count // 2 :])
    await sink.commit("run", b'{"n":1}')
    await sink.close()
    assert rows(db) == records
    with contextlib.closing(sqlite3.connect(db)) as conn:
        texts = [r[0] for r in conn.execute("SELECT data FROM items ORDER BY id")]
    assert texts == [msgspec.json.encode(r).decode() for r in records]

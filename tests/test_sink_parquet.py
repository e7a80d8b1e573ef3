"""The Parquet sink: one row group per committed batch, exactly once across crashes.

A crash is simulated by dropping the sink without ``close()`` (what SIGKILL leaves: the
part files and the journal on disk) and opening a new sink on the same path.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import streampage  # noqa: E402
from streampage.sinks import Parquet  # noqa: E402
from streampage.sinks.parquet import struct_schema  # noqa: E402


def rows(path: Path) -> list[dict[str, Any]]:
    with pq.ParquetFile(path) as f:
        return f.read().to_pylist()  # type: ignore[no-any-return]


def row_groups(path: Path) -> list[int]:
    """The number of rows of each row group of the file."""
    with pq.ParquetFile(path) as f:
        return [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]


def recs(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item-{i}"} for i in ids]


def cp(n: int) -> bytes:
    return msgspec.json.encode({"n": n})


def crash(sink: Parquet) -> None:
    """What SIGKILL leaves: files as written, nothing merged (the OS closes the journal)."""
    assert sink._journal_file is not None
    sink._journal_file.close()


async def stored(path: Path, name: str) -> bytes | None:
    """The checkpoint a new sink on ``path`` finds under ``name`` (left as a crash would)."""
    sink = Parquet(path)
    found = await sink.open(name)
    crash(sink)
    return found


def parts(path: Path) -> list[str]:
    d = path.with_name(path.name + ".parts")
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


async def test_write_commit_close_makes_one_row_group_per_commit(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    assert isinstance(sink, streampage.sinks.Sink)
    assert await sink.open("run") is None
    await sink.write(recs(1, 2, 3))
    await sink.commit("run", cp(1))
    await sink.write(recs(4, 5))
    await sink.commit("run", cp(2))
    await sink.commit("run", cp(3))  # a commit without records (pages that held none)
    await sink.write(recs(6))
    await sink.commit("run", cp(4))
    await sink.close()

    assert rows(path) == recs(1, 2, 3, 4, 5, 6)
    assert row_groups(path) == [3, 2, 1]
    with pq.ParquetFile(path) as f:
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    assert not path.with_name("out.parquet.parts").exists()
    assert not path.with_name("out.parquet.merging").exists()
    # the journal stays: it is what lets a later run resume, or refuse to start afresh
    assert await stored(path, "run") == cp(4)


async def test_uncommitted_write_is_dropped_by_close(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path, compression="snappy")
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3, 4))  # the stream failed before this batch's commit
    await sink.close()

    assert rows(path) == recs(1, 2)
    assert row_groups(path) == [2]
    assert parts(path) == []
    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.close()
    assert rows(path) == recs(1, 2)


async def test_crash_then_resume_keeps_exactly_the_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    await sink.write(recs(4, 5))  # written, never committed: the process dies here
    crash(sink)  # no close(): what SIGKILL leaves
    assert not path.exists()
    assert parts(path) == ["part-000001.parquet", "part-000002.parquet", "part-000003.parquet"]

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert parts(path) == ["part-000001.parquet", "part-000002.parquet"]
    await resumed.write(recs(4, 5, 6))
    await resumed.commit("run", cp(3))
    await resumed.close()

    assert rows(path) == recs(1, 2, 3, 4, 5, 6)
    assert row_groups(path) == [2, 1, 3]


async def test_crash_after_a_close_adds_to_the_merged_file(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    first = Parquet(path)
    await first.open("run")
    await first.write(recs(1, 2))
    await first.commit("run", cp(1))
    await first.close()

    second = Parquet(path)
    assert await second.open("run") == cp(1)
    await second.write(recs(3))
    await second.commit("run", cp(2))
    await second.write(recs(4))
    crash(second)  # killed: path still holds only the first run's rows
    assert rows(path) == recs(1, 2)

    third = Parquet(path)
    assert await third.open("run") == cp(2)
    await third.close()
    assert rows(path) == recs(1, 2, 3)
    assert row_groups(path) == [2, 1]
    assert parts(path) == []


async def test_crash_during_the_merge_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.close()
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(2, 3))
    await sink.commit("run", cp(2))
    crash(sink)  # killed in close(), while the merged file was written, before its rename
    merging = path.with_name("out.parquet.merging")
    merging.write_bytes(path.read_bytes()[:20])
    assert rows(path) == recs(1)  # untouched

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert not merging.exists()
    await resumed.close()
    assert rows(path) == recs(1, 2, 3)
    assert row_groups(path) == [1, 2]


async def test_a_failed_merge_keeps_the_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))

    def full(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("streampage.sinks.parquet.os.replace", full)
    with pytest.raises(OSError, match="disk full"):
        await sink.close()
    monkeypatch.undo()
    assert not path.exists()
    assert not path.with_name("out.parquet.merging").exists()
    assert parts(path) == ["part-000001.parquet"]

    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.close()
    assert rows(path) == recs(1, 2)


async def test_crash_after_the_rename_does_not_merge_twice(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    kept = tmp_path / "kept"
    shutil.copytree(path.with_name("out.parquet.parts"), kept)
    await sink.close()
    # killed after os.replace, before the merged parts were deleted: they are still there
    shutil.copytree(kept, path.with_name("out.parquet.parts"))

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert parts(path) == []  # in the file already
    await resumed.write(recs(4))
    await resumed.commit("run", cp(3))
    await resumed.close()
    assert rows(path) == recs(1, 2, 3, 4)
    assert row_groups(path) == [2, 1, 1]


@pytest.mark.parametrize(
    "torn", [b'{"name":"run","checkpoint":{"n":', b'{"name":"run","checkpoint":{"n":9}}']
)
async def test_a_torn_last_journal_line_is_no_commit(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.write(recs(2))
    crash(sink)
    journal = path.with_name("out.parquet.journal")
    good = journal.read_bytes()
    journal.write_bytes(good + torn)  # the append was cut short (no newline: no whole line)

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(1)
    assert journal.read_bytes() == good  # cut back, so that later commits append cleanly
    await resumed.write(recs(3))
    await resumed.commit("run", cp(3))
    await resumed.close()
    assert rows(path) == recs(1, 3)
    assert await stored(path, "run") == cp(3)


async def test_checkpoints_by_name(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("a")
    await sink.write(recs(1))
    await sink.commit("a", cp(1))
    await sink.close()
    assert await stored(path, "b") is None
    assert await stored(path, "a") == cp(1)


async def test_existing_file_without_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    pq.write_table(pa.Table.from_pylist(recs(1)), path)
    sink = Parquet(path)
    with pytest.raises(streampage.ConfigurationError, match="remove it or choose another path"):
        await sink.open("run")
    await sink.close()  # the drain loop closes after a failed open too: nothing to do
    assert rows(path) == recs(1)
    # an empty file (a temporary file made for it) is no output yet
    empty = tmp_path / "empty.parquet"
    empty.touch()
    sink = Parquet(empty)
    assert await sink.open("run") is None
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.close()
    assert rows(empty) == recs(1)


async def test_inferred_schema_widens_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write([{"a": None}])
    await sink.commit("run", cp(1))
    await sink.write([{"a": 1}])
    await sink.commit("run", cp(2))
    await sink.write([{"a": 2.5, "b": "x"}])
    await sink.commit("run", cp(3))
    with pytest.raises(ValueError, match=r"Parquet\(schema=\.\.\.\)"):
        await sink.write([{"a": "text"}])  # fails before its commit: nothing is lost
    await sink.close()
    with pq.ParquetFile(path) as f:
        schema = f.schema_arrow
    assert schema.field("a").type == pa.float64()
    assert schema.field("b").type == pa.string()
    assert rows(path) == [{"a": None, "b": None}, {"a": 1.0, "b": None}, {"a": 2.5, "b": "x"}]
    assert row_groups(path) == [1, 1, 1]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(msgspec.Struct):
    x: float
    y: float


class Item(msgspec.Struct, omit_defaults=True, rename="camel"):
    item_id: int
    name: str
    seen: dt.datetime
    price: float | None = None
    tags: list[str] = []
    where: Point | None = None
    counts: dict[str, int] = {}
    colour: Colour = Colour.RED
    day: dt.date | None = None
    blob: bytes = b""


async def test_typed_schema_from_a_struct(tmp_path: Path) -> None:
    schema = struct_schema(Item)
    assert schema == pa.schema(
        [
            ("itemId", pa.int64()),
            ("name", pa.string()),
            ("seen", pa.timestamp("us", tz="UTC")),
            ("price", pa.float64()),
            ("tags", pa.list_(pa.string())),
            ("where", pa.struct([("x", pa.float64()), ("y", pa.float64())])),
            ("counts", pa.map_(pa.string(), pa.int64())),
            ("colour", pa.string()),
            ("day", pa.date32()),
            ("blob", pa.binary()),
        ]
    )
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    path = tmp_path / "out.parquet"
    sink = Parquet(path, schema=Item)
    await sink.open("run")
    await sink.write([Item(1, "a", when)])  # defaults omitted by to_builtins: stored anyway
    await sink.commit("run", cp(1))
    await sink.write(
        [
            Item(
                2,
                "b",
                when,
                price=9.5,
                tags=["t"],
                where=Point(1, 2),
                counts={"k": 3},
                colour=Colour.BLUE,
                day=dt.date(2024, 5, 2),
                blob=b"\x00\x01",
            )
        ]
    )
    await sink.commit("run", cp(2))
    await sink.close()
    with pq.ParquetFile(path) as f:
        assert f.schema_arrow.remove_metadata() == schema
    got = rows(path)
    assert got[0] == {
        "itemId": 1,
        "name": "a",
        "seen": when,
        "price": None,
        "tags": [],
        "where": None,
        "counts": [],
        "colour": "red",
        "day": None,
        "blob": b"",
    }
    assert got[1]["where"] == {"x": 1.0, "y": 2.0}
    assert got[1]["counts"] == [("k", 3)]
    assert got[1]["colour"] == "blue"
    assert got[1]["day"] == dt.date(2024, 5, 2)
    assert got[1]["blob"] == b"\x00\x01"


async def test_given_arrow_schema_and_an_empty_run(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int32())])
    path = tmp_path / "out.parquet"
    sink = Parquet(path, schema=schema)
    await sink.open("run")
    await sink.commit("run", cp(1))  # a stream with no records
    await sink.close()
    assert rows(path) == []
    with pq.ParquetFile(path) as f:
        assert f.schema_arrow.remove_metadata() == schema
    # resumed: rows go into the same file; keys not in the schema are dropped
    sink = Parquet(path, schema=schema)
    assert await sink.open("run") == cp(1)
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(2))
    await sink.close()
    assert rows(path) == [{"id": 1}, {"id": 2}]
    # no schema and no records: no file to write
    none = tmp_path / "none.parquet"
    sink = Parquet(none)
    await sink.open("run")
    await sink.commit("run", cp(1))
    await sink.close()
    assert not none.exists()


def test_bad_schemas_are_refused() -> None:
    with pytest.raises(streampage.ConfigurationError, match=r"pyarrow\.Schema"):
        Parquet("x.parquet", schema=dict)

    class Loose(msgspec.Struct):
        value: int | str

    with pytest.raises(streampage.ConfigurationError, match=r"Loose\.value"):
        Parquet("x.parquet", schema=Loose)


def test_missing_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(streampage.ConfigurationError) as info:
        Parquet("out.parquet")
    assert "pip install 'streampage[parquet]'" in str(info.value)


# ---------------------------------------------------------------------- real SIGKILL

_CHILD = """
import asyncio, sys, msgspec
from streampage.sinks import Parquet

async def main():
    sink = Parquet(sys.argv[1])
    found = await sink.open("run")
    n = 0 if found is None else msgspec.json.decode(found)["n"]
    print(n, flush=True)
    for i in range(n + 1, 41):
        await sink.write([{"batch": i, "row": j} for j in range(i % 3 + 1)])
        await sink.commit("run", msgspec.json.encode({"n": i}))
    await sink.close()
    print("done", flush=True)

asyncio.run(main())
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_at_any_moment_then_resume_is_exactly_once(tmp_path: Path) -> None:
    """A process writing 40 batches is killed at random moments (mid-write, between write
    and commit, mid-journal, mid-merge) and started again until it finishes: the file holds
    every batch once, in order, one row group each, and no resume ever goes backwards."""
    path = tmp_path / "out.parquet"
    rng = random.Random(8)
    seen = [0]
    for _ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        seen.append(int(child.stdout.readline()))  # opened: the run is under way
        time.sleep(rng.uniform(0, 0.1))
        child.kill()
        child.wait()
        rest = child.stdout.read()
        child.stdout.close()
        if "done" in rest:
            break
    else:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True
        )
        assert "done" in done.stdout, done.stderr
    assert seen == sorted(seen)
    assert rows(path) == [{"batch": i, "row": j} for i in range(1, 41) for j in range(i % 3 + 1)]
    assert row_groups(path) == [i % 3 + 1 for i in range(1, 41)]
    assert parts(path) == []


# ---------------------------------------------------------------------- end to end


async def test_into_parquet_end_to_end(tmp_path: Path, page_server: Any) -> None:
    server = await page_server(pages=10, per_page=3)
    path = tmp_path / "items.parquet"
    s = streampage.stream(server.url, pages=streampage.PageNumber(stop=10), concurrency=4)
    stats = await s.records("items").into(Parquet(path), batch=6)
    assert stats.committed_pages == 10
    got = rows(path)
    assert sorted(r["id"] for r in got) == list(range(1, 31))
    assert row_groups(path) == [6] * 5


async def test_into_parquet_resumes_after_a_failure(tmp_path: Path, page_server: Any) -> None:
    server = await page_server(pages=12, per_page=2, fail={7: 404})
    path = tmp_path / "items.parquet"
    first = streampage.stream(
        server.url, pages=streampage.PageNumber(stop=12), ordered=True, concurrency=1
    )
    with pytest.raises(streampage.HTTPStatusError):
        await first.records("items").into(Parquet(path), batch=4)
    # pages 1..6 were committed (two pages a batch) and merged into the file by close()
    assert sorted(r["id"] for r in rows(path)) == list(range(1, 13))

    server.fail.clear()
    asked = len(server.requests)
    again = streampage.stream(server.url, pages=streampage.PageNumber(stop=12), concurrency=4)
    await again.records("items").into(Parquet(path), batch=4, resume=True)
    assert sorted(r["id"] for r in rows(path)) == list(range(1, 25))  # each exactly once
    assert not set(server.requests[asked:]) & set(range(1, 7))  # committed: not fetched again

    with pytest.raises(streampage.ConfigurationError, match="resume=True"):
        await (
            streampage.stream(server.url, pages=streampage.PageNumber(stop=12))
            .records("items")
            .into(Parquet(path))
        )

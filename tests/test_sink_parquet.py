"""The Parquet sink: one file merged once a run, or a folder of published parts; exactly once
across crashes, one writer at a time, nothing visible but the output.

A crash is simulated by ``crash(sink)``: the sink lets go of its files and lock without
``close()`` or ``finish()``, which is what SIGKILL leaves (the staged parts and the journal
on disk, the lock released by the kernel). The tests at the end kill real processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pads = pytest.importorskip("pyarrow.dataset")

import streampage  # noqa: E402
from streampage.sinks import Parquet as Sink  # noqa: E402
from streampage.sinks.parquet import struct_schema  # noqa: E402


def Parquet(*args: Any, **kwargs: Any) -> Sink:
    """The sink with a row group per committed batch, as most tests here read which
    batches a file holds from its row groups (merged files gather them by default)."""
    return Sink(*args, **{"row_group_rows": 1, **kwargs})


def rows(path: Path) -> list[dict[str, Any]]:
    with pq.ParquetFile(path) as f:
        return f.read().to_pylist()  # type: ignore[no-any-return]


def row_groups(path: Path) -> list[int]:
    """The number of rows of each row group of the file."""
    with pq.ParquetFile(path) as f:
        return [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]


def dataset_rows(folder: Path) -> list[dict[str, Any]]:
    """A folder read as pyarrow.dataset reads it (names starting with . or _ skipped)."""
    return pads.dataset(folder, format="parquet").to_table().to_pylist()  # type: ignore[no-any-return]


def recs(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item-{i}"} for i in ids]


def cp(n: int) -> bytes:
    return msgspec.json.encode({"n": n})


def crash(sink: Sink) -> None:
    """What SIGKILL leaves: files as written, nothing merged, the lock let go."""
    sink._shut()


async def stored(path: Path | str, name: str) -> bytes | None:
    """The checkpoint a new sink on ``path`` finds under ``name`` (left as a crash would)."""
    sink = Parquet(path)
    found = await sink.open(name)
    crash(sink)
    return found


def state(path: Path) -> Path:
    """The hidden state folder of a file target."""
    return path.with_name(f".{path.name}.streampage")


def parts(path: Path) -> list[str]:
    """The staged parts of a file target (or, for a folder, of the folder)."""
    d = (path / ".streampage" if path.is_dir() else state(path)) / "parts"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def visible(folder: Path) -> list[str]:
    """What a reader listing the folder sees: every name not starting with a dot."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------- one file


async def test_write_commit_finish_makes_one_row_group_per_commit(tmp_path: Path) -> None:
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
    await sink.finish("run")
    await sink.close()

    assert rows(path) == recs(1, 2, 3, 4, 5, 6)
    assert row_groups(path) == [3, 2, 1]
    with pq.ParquetFile(path) as f:
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    assert parts(path) == []
    assert visible(tmp_path) == ["out.parquet"]  # the journal and the lock are hidden
    assert not (state(path) / "merging.parquet").exists()
    # the journal stays: it is what lets a later run resume, or refuse to start afresh
    assert await stored(path, "run") == cp(4)


async def test_a_field_the_first_record_of_a_batch_lacks_is_kept(tmp_path: Path) -> None:
    # pyarrow's from_pylist takes its columns from the first record alone: "b" and "c"
    # would be dropped from the whole batch, without a word
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write([{"a": 1}, {"a": 2, "b": "x"}, {"c": 3.5, "a": 3}])
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.close()
    assert rows(path) == [
        {"a": 1, "b": None, "c": None},
        {"a": 2, "b": "x", "c": None},
        {"a": 3, "b": None, "c": 3.5},
    ]


@pytest.mark.parametrize("empty_first", [True, False])
async def test_records_without_fields_are_rows_of_nulls_not_lost(
    tmp_path: Path, empty_first: bool
) -> None:
    # pyarrow makes no rows of a batch of {} records (a table without columns): they
    # were committed and gone, with the run complete
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    batches = [[{}, {}], [{"a": 1}]] if empty_first else [[{"a": 1}], [{}, {}]]
    for n, batch in enumerate(batches):
        await sink.write(batch)
        await sink.commit("run", cp(n))
    await sink.finish("run")
    await sink.close()
    nulls = [{"a": None}, {"a": None}]
    assert rows(path) == (nulls + [{"a": 1}] if empty_first else [{"a": 1}, *nulls])


@pytest.mark.parametrize("target", ["out.parquet", "out/"])
async def test_records_without_fields_wait_for_columns_and_finish_says_so(
    tmp_path: Path, target: str
) -> None:
    # No record has a field yet: no Parquet file can hold the rows. They stay committed
    # (a folder publishes nothing, at close or at part_rows), the run's finish fails and
    # says why, and a later run whose records have fields gives them their columns.
    path = f"{tmp_path}/{target}"  # (a Path would drop the trailing /)
    sink = Parquet(path, part_rows=2)
    await sink.open("run")
    await sink.write([{}, {}, {}])
    await sink.commit("run", cp(1))  # a folder's part_rows publish: not yet, and no error
    with pytest.raises(ValueError, match=r"3 committed records have no fields .*schema="):
        await sink.finish("run")
    await sink.close()
    assert await stored(path, "run") == cp(1)

    again = Parquet(path)
    await again.open("run")  # a folder publishes what a run left committed: not these yet
    await again.write([{"a": 1}])
    await again.commit("run", cp(2))
    await again.finish("run")
    await again.close()
    got = rows(Path(path)) if target.endswith(".parquet") else dataset_rows(Path(path))
    assert got == [{"a": None}] * 3 + [{"a": 1}]


async def test_a_folder_killed_after_committing_records_without_fields_opens_again(
    tmp_path: Path,
) -> None:
    folder = f"{tmp_path}/out/"
    sink = Parquet(folder)
    await sink.open("run")
    await sink.write([{}, {}])
    await sink.commit("run", cp(1))
    crash(sink)
    again = Parquet(folder)
    assert await again.open("run") == cp(1)  # its open publishes nothing it cannot hold
    await again.write([{"b": "x"}])
    await again.commit("run", cp(2))
    await again.finish("run")
    await again.close()
    assert dataset_rows(Path(folder)) == [{"b": None}, {"b": None}, {"b": "x"}]


async def test_a_replace_of_records_without_fields_waits_for_columns_too(tmp_path: Path) -> None:
    # the replace's finish fails before it takes effect; a later run with fields finishes it
    folder = f"{tmp_path}/out/"
    sink = Parquet(folder)
    await sink.open("run")
    await sink.replace("run")
    await sink.write([{}, {}])
    await sink.commit("run", cp(1))
    with pytest.raises(ValueError, match="2 committed records have no fields"):
        await sink.finish("run")
    await sink.close()
    assert visible(Path(folder)) == []

    again = Parquet(folder)
    assert await again.open("run") == cp(1)
    await again.write([{"a": 1}])
    await again.commit("run", cp(2))
    await again.finish("run")
    await again.close()
    assert dataset_rows(Path(folder)) == [{"a": None}, {"a": None}, {"a": 1}]


async def test_records_without_fields_with_a_schema_are_rows_of_nulls(tmp_path: Path) -> None:
    sink = Parquet(tmp_path / "given.parquet", schema=pa.schema([("a", pa.int64())]))
    await sink.open("run")
    await sink.write([{}, {}, {}])
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.close()
    assert rows(tmp_path / "given.parquet") == [{"a": None}] * 3


class NoFields(msgspec.Struct):
    pass


@pytest.mark.parametrize("schema", [pa.schema([]), NoFields])
def test_a_schema_without_columns_is_refused(tmp_path: Path, schema: Any) -> None:
    # it held no rows at all: every record was dropped, and the run said complete
    with pytest.raises(streampage.ConfigurationError, match="has no columns"):
        Parquet(tmp_path / "out.parquet", schema=schema)


async def test_close_without_finish_merges_nothing_and_a_later_finish_does(
    tmp_path: Path,
) -> None:
    """The file is rewritten once a run, at its end: a failed run (closed, not finished)
    leaves its committed parts staged, and the run that completes merges them."""
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.close()
    assert not path.exists()
    assert parts(path) == ["part-000001.arrow"]

    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.write(recs(3))
    await again.commit("run", cp(2))
    await again.finish("run")
    await again.close()
    assert rows(path) == recs(1, 2, 3)
    assert row_groups(path) == [2, 1]
    assert parts(path) == []


async def test_parts_staged_in_parquet_by_an_earlier_version_are_merged(tmp_path: Path) -> None:
    """Staged parts are Arrow IPC files now; a target an earlier version left with parts
    staged in Parquet (a run that failed) is resumed and merged all the same."""
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.close()
    staged = state(path) / "parts"
    old = staged / "part-000001.parquet"
    with pa.OSFile(str(staged / "part-000001.arrow")) as f:
        pq.write_table(pa.ipc.open_file(f).read_all(), old)
    (staged / "part-000001.arrow").unlink()
    assert parts(path) == ["part-000001.parquet"]

    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.write(recs(3))
    await again.commit("run", cp(2))
    await again.finish("run")
    await again.close()
    assert rows(path) == recs(1, 2, 3)
    assert parts(path) == []


async def test_uncommitted_write_is_dropped_by_close(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path, compression="snappy")
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3, 4))  # the stream failed before this batch's commit
    await sink.close()
    assert parts(path) == ["part-000001.arrow"]

    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.finish("run")
    await again.close()
    assert rows(path) == recs(1, 2)
    assert row_groups(path) == [2]


async def test_crash_then_resume_keeps_exactly_the_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    await sink.write(recs(4, 5))  # written, never committed: the process dies here
    crash(sink)
    assert not path.exists()
    assert parts(path) == ["part-000001.arrow", "part-000002.arrow", "part-000003.arrow"]

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert parts(path) == ["part-000001.arrow", "part-000002.arrow"]
    await resumed.write(recs(4, 5, 6))
    await resumed.commit("run", cp(3))
    await resumed.finish("run")
    await resumed.close()

    assert rows(path) == recs(1, 2, 3, 4, 5, 6)
    assert row_groups(path) == [2, 1, 3]


async def test_crash_after_a_finish_adds_to_the_merged_file(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    first = Parquet(path)
    await first.open("run")
    await first.write(recs(1, 2))
    await first.commit("run", cp(1))
    await first.finish("run")
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
    await third.finish("run")
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
    await sink.finish("run")
    await sink.close()
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(2, 3))
    await sink.commit("run", cp(2))
    crash(sink)  # killed in finish(), while the merged file was written, before its rename
    merging = state(path) / "merging.parquet"
    merging.write_bytes(path.read_bytes()[:20])
    assert rows(path) == recs(1)  # untouched

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert not merging.exists()
    await resumed.finish("run")
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
        await sink.finish("run")
    await sink.close()
    monkeypatch.undo()
    assert not path.exists()
    assert not (state(path) / "merging.parquet").exists()
    assert parts(path) == ["part-000001.arrow"]

    again = Parquet(path)
    assert await again.open("run") == cp(1)
    await again.finish("run")
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
    shutil.copytree(state(path) / "parts", kept)
    await sink.finish("run")
    await sink.close()
    # killed after os.replace, before the merged parts were deleted: they are still there
    shutil.rmtree(state(path) / "parts")
    shutil.copytree(kept, state(path) / "parts")

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert parts(path) == []  # in the file already
    await resumed.write(recs(4))
    await resumed.commit("run", cp(3))
    await resumed.finish("run")
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
    journal = state(path) / "journal"
    good = journal.read_bytes()
    journal.write_bytes(good + torn)  # the append was cut short (no newline: no whole line)

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(1)
    assert journal.read_bytes() == good  # cut back, so that later commits append cleanly
    await resumed.write(recs(3))
    await resumed.commit("run", cp(3))
    await resumed.finish("run")
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
    with pytest.raises(streampage.ConfigurationError):  # not in use: the lock was let go
        await Parquet(path).open("run")
    # an empty file (a temporary file made for it) is no output yet
    empty = tmp_path / "empty.parquet"
    empty.touch()
    sink = Parquet(empty)
    assert await sink.open("run") is None
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.close()
    assert rows(empty) == recs(1)


async def test_the_old_layout_beside_the_file_is_moved_into_the_state_folder(
    tmp_path: Path,
) -> None:
    """An output written before the state folder existed (``out.parquet.journal`` and
    ``out.parquet.parts/`` beside it) still resumes: open moves them in."""
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.write(recs(3))
    await sink.commit("run", cp(2))  # committed, staged: not in the file yet
    crash(sink)
    (state(path) / "journal").rename(tmp_path / "out.parquet.journal")
    (state(path) / "parts").rename(tmp_path / "out.parquet.parts")
    (tmp_path / "out.parquet.merging").write_bytes(b"PAR1")  # a merge killed midway
    shutil.rmtree(state(path))
    assert visible(tmp_path) == [
        "out.parquet",
        "out.parquet.journal",
        "out.parquet.merging",
        "out.parquet.parts",
    ]

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(2)
    assert visible(tmp_path) == ["out.parquet"]
    await resumed.write(recs(4))
    await resumed.commit("run", cp(3))
    await resumed.finish("run")
    await resumed.close()
    assert rows(path) == recs(1, 2, 3, 4)
    assert (state(path) / "journal").stat().st_mode & 0o777 == 0o600


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
    await sink.finish("run")
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
    await sink.finish("run")
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
    await sink.finish("run")
    await sink.close()
    assert rows(path) == []
    with pq.ParquetFile(path) as f:
        assert f.schema_arrow.remove_metadata() == schema
    # resumed: rows go into the same file; keys not in the schema are dropped
    sink = Parquet(path, schema=schema)
    assert await sink.open("run") == cp(1)
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(2))
    await sink.finish("run")
    await sink.close()
    assert rows(path) == [{"id": 1}, {"id": 2}]
    # no schema and no records: no file to write
    none = tmp_path / "none.parquet"
    sink = Parquet(none)
    await sink.open("run")
    await sink.commit("run", cp(1))
    await sink.finish("run")
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


# ---------------------------------------------------------------------- one writer


async def test_a_second_open_on_the_same_target_is_refused_until_close(tmp_path: Path) -> None:
    """Two runs on one target would each commit the same pages: the second open fails at
    once, naming the holder, whatever checkpoint name it asks for."""
    for target in (tmp_path / "out.parquet", f"{tmp_path}/folder/"):
        first = Parquet(target)
        await first.open("run")
        second = Parquet(target)
        with pytest.raises(streampage.CheckpointInUseError) as info:
            await second.open("another-name")
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(info.value)
        assert info.value.holder is not None
        await second.close()  # a failed open holds nothing
        await first.close()
        assert await second.open("run") is None  # free at once
        await second.close()


_HOLDER = """
import asyncio, sys
from streampage.sinks import Parquet

async def main():
    await Parquet(sys.argv[1], row_group_rows=1).open("run")
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
async def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        sink = Parquet(path)
        with pytest.raises(streampage.CheckpointInUseError) as info:
            await sink.open("run")
        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(info.value)
    finally:
        holder.kill()
        await holder.wait()
    assert await sink.open("run") is None  # no stale lock, no timeout
    await sink.close()


# ---------------------------------------------------------------------- a folder


async def test_a_folder_gets_one_published_part_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/")
    assert repr(sink) == f"Parquet('{folder}/')"
    await sink.open("run")
    for i in range(3):
        await sink.write(recs(3 * i + 1, 3 * i + 2, 3 * i + 3))
        await sink.commit("run", cp(i))
        assert visible(folder) == []  # committed, staged until the run closes
        assert dataset_rows(folder) == []
    await sink.close()
    assert visible(folder) == ["part-000003.parquet"]  # named after the last staged part
    assert sorted(r["id"] for r in dataset_rows(folder)) == list(range(1, 10))
    assert row_groups(folder / "part-000003.parquet") == [3, 3, 3]
    assert parts(folder) == []

    again = Parquet(folder)  # an existing directory is a folder target without the "/"
    assert await again.open("run") == cp(2)
    await again.write(recs(10))
    await again.commit("run", cp(3))
    await again.finish("run")
    await again.close()
    assert visible(folder) == ["part-000003.parquet", "part-000004.parquet"]
    assert sorted(r["id"] for r in dataset_rows(folder)) == list(range(1, 11))
    assert (folder / ".streampage" / "journal").stat().st_mode & 0o777 == 0o600
    assert (folder / ".streampage").stat().st_mode & 0o777 == 0o700


async def test_a_folder_publishes_every_part_rows_rows(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/", part_rows=4)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    assert visible(folder) == []
    await sink.write(recs(3, 4, 5))
    await sink.commit("run", cp(2))  # 5 committed rows: published at once
    assert visible(folder) == ["part-000002.parquet"]
    await sink.write(recs(6))
    await sink.commit("run", cp(3))
    await sink.write(recs(7))  # never committed
    await sink.close()  # a failed run: what was committed is published all the same
    assert visible(folder) == ["part-000002.parquet", "part-000003.parquet"]
    assert sorted(r["id"] for r in dataset_rows(folder)) == list(range(1, 7))


async def test_a_killed_folder_run_is_published_by_the_next_open(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    crash(sink)
    assert visible(folder) == []  # committed, not published: no reader sees it yet

    resumed = Parquet(f"{folder}/")
    assert await resumed.open("run") == cp(1)
    assert visible(folder) == ["part-000001.parquet"]
    assert dataset_rows(folder) == recs(1, 2)
    await resumed.close()


async def test_a_folder_publish_killed_after_its_rename_is_not_published_twice(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    kept = tmp_path / "kept"
    shutil.copytree(folder / ".streampage" / "parts", kept)
    await sink.close()
    # killed after the rename, before the staged parts were deleted
    shutil.rmtree(folder / ".streampage" / "parts")
    shutil.copytree(kept, folder / ".streampage" / "parts")

    again = Parquet(f"{folder}/")
    assert await again.open("run") == cp(2)
    assert parts(folder) == []
    await again.close()
    assert visible(folder) == ["part-000002.parquet"]
    assert dataset_rows(folder) == recs(1, 2, 3)


async def test_a_folder_with_foreign_parts_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(recs(1)), folder / "part-000001.parquet")
    sink = Parquet(folder)
    with pytest.raises(streampage.ConfigurationError, match="no journal"):
        await sink.open("run")
    await sink.close()
    assert visible(folder) == ["part-000001.parquet"]


async def test_a_folder_keeps_its_columns_across_runs(tmp_path: Path) -> None:
    """New parts start from the schema of the last part (its footer only), so that a column
    missing from later records is null there rather than gone, and ints stay ints."""
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.write([{"id": 1, "tag": "a"}])
    await sink.commit("run", cp(1))
    await sink.close()
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.write([{"id": 2}])
    await sink.commit("run", cp(2))
    await sink.close()
    with pq.ParquetFile(folder / "part-000002.parquet") as f:
        assert f.schema_arrow.remove_metadata() == pa.schema(
            [("id", pa.int64()), ("tag", pa.string())]
        )
    assert dataset_rows(folder) == [{"id": 1, "tag": "a"}, {"id": 2, "tag": None}]


async def test_adding_to_a_big_folder_touches_none_of_its_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run adding 1,000 rows to a folder of 10^6 rows rewrites nothing and reads
    no part's data (only the last part's footer, for its schema): it takes about as long as
    adding them to a folder of 10^4 rows."""
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])

    async def run(folder: Path, ids: range, n: int) -> float:
        started = time.perf_counter()
        sink = Parquet(f"{folder}/", schema=schema)
        await sink.open("run")
        await sink.write([{"id": i, "name": "x"} for i in ids])
        await sink.commit("run", cp(n))
        await sink.finish("run")
        await sink.close()
        return time.perf_counter() - started

    big, small = tmp_path / "big", tmp_path / "small"
    await run(big, range(10**6), 1)  # one batch: one part of a million rows
    await run(small, range(10**4), 1)
    (part,) = big.glob("part-*.parquet")
    before = part.stat()
    opened: list[str] = []  # every file the sink opens to read row groups from
    real = pq.ParquetFile

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    real_os_file = pa.OSFile  # staged parts are Arrow IPC files, read through OSFile

    def spy_os_file(source: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(source))
        return real_os_file(source, *args, **kwargs)

    monkeypatch.setattr(pa, "OSFile", spy_os_file)

    def thousand(n: int) -> range:
        return range(10**6 + 1000 * n, 10**6 + 1000 * (n + 1))

    took_small = min([await run(small, thousand(n), n + 2) for n in range(3)])
    took_big = min([await run(big, thousand(n), n + 2) for n in range(3)])

    after = part.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert opened and str(part) not in opened  # staged parts were merged; the big one not
    assert len(visible(big)) == 4  # the big part and one part per run
    assert pq.read_metadata(big / "part-000004.parquet").num_rows == 1000
    # merging the big part again takes ~0.2 s; each of these runs takes a few ms
    assert took_big < 3 * took_small + 0.05, (took_big, took_small)
    assert pads.dataset(big, format="parquet").count_rows() == 10**6 + 3000


# ---------------------------------------------------------------------- replace


async def test_replace_keeps_the_old_file_until_finish(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.close()

    sink = Parquet(path)
    assert await sink.open("run") == cp(1)
    await sink.replace("run")
    await sink.write(recs(10))
    await sink.commit("run", cp(10))
    crash(sink)  # killed mid-replace: the old file is the output
    assert rows(path) == recs(1, 2)

    resumed = Parquet(path)
    assert await resumed.open("run") == cp(10)  # the replace, to go on with
    await resumed.write(recs(11))
    await resumed.commit("run", cp(11))
    await resumed.close()  # not finished: still the old file
    assert rows(path) == recs(1, 2)

    last = Parquet(path)
    assert await last.open("run") == cp(11)
    await last.finish("run")  # only the parts since the replace: not the old file
    await last.close()
    assert rows(path) == recs(10, 11)
    assert parts(path) == []
    assert await stored(path, "run") == cp(11)


async def test_replace_again_starts_the_replace_over(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.replace("run")
    await sink.write(recs(2))
    await sink.commit("run", cp(2))
    crash(sink)

    again = Parquet(path)
    assert await again.open("run") == cp(2)
    await again.replace("run")  # the unfinished replace is discarded
    assert parts(path) == []
    await again.write(recs(3))
    await again.commit("run", cp(3))
    await again.finish("run")
    await again.close()
    assert rows(path) == recs(3)


async def test_a_replace_killed_after_its_rename_is_completed_by_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.finish("run")
    await sink.replace("run")
    await sink.write(recs(2))
    await sink.commit("run", cp(2))

    def killed(path: Path) -> None:
        raise SystemExit("killed after the rename, before the journal said so")

    monkeypatch.setattr("streampage.sinks.parquet.fsync_dir", killed)
    with pytest.raises(SystemExit):
        await sink.finish("run")
    crash(sink)
    monkeypatch.undo()
    assert rows(path) == recs(2)  # the new file is the output

    again = Parquet(path)
    assert await again.open("run") == cp(2)
    await again.write(recs(3))
    await again.commit("run", cp(3))
    await again.finish("run")  # adds to the new file: the replace is over
    await again.close()
    assert rows(path) == recs(2, 3)
    assert b'"replaced"' in (state(path) / "journal").read_bytes()


async def test_replace_in_a_folder_publishes_at_finish_and_drops_the_old_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "items"
    sink = Parquet(f"{folder}/", part_rows=2)
    await sink.open("run")
    await sink.write(recs(1, 2, 3))
    await sink.commit("run", cp(1))
    await sink.close()
    assert visible(folder) == ["part-000001.parquet"]

    sink = Parquet(f"{folder}/", part_rows=2)
    assert await sink.open("run") == cp(1)
    await sink.replace("run")
    for i in (10, 12):
        await sink.write(recs(i, i + 1))  # part_rows reached: still hidden, a replace
        await sink.commit("run", cp(i))
    await sink.close()
    assert dataset_rows(folder) == recs(1, 2, 3)

    sink = Parquet(f"{folder}/", part_rows=2)
    assert await sink.open("run") == cp(12)

    def killed(*args: Any) -> None:
        raise SystemExit("killed after the journal said replaced")

    monkeypatch.setattr("streampage.sinks.parquet.drop_below", killed)
    with pytest.raises(SystemExit):
        await sink.finish("run")
    crash(sink)
    monkeypatch.undo()
    assert dataset_rows(folder) == recs(1, 2, 3)  # nothing deleted or published yet

    again = Parquet(f"{folder}/", part_rows=2)
    assert await again.open("run") == cp(12)  # rolled forward
    await again.close()
    assert visible(folder) == ["part-000002.parquet", "part-000003.parquet"]
    assert dataset_rows(folder) == recs(10, 11, 12, 13)


# ---------------------------------------------------------------------- a target's format


async def test_a_json_lines_folder_is_not_gone_on_with_in_parquet(
    tmp_path: Path, page_server: Any
) -> None:
    """``-o x/ --format jsonl`` then ``-o x/ --resume`` (Parquet, the default) used to put
    part-000001.parquet beside part-000001.jsonl and call the run complete, each reader
    seeing part of the data. The folder's format is in its journal: refused at open,
    nothing written, the lock let go; and the other way round."""
    from streampage.sinks import JSONLines

    server = await page_server(pages=6, per_page=2)

    def fetch() -> Any:
        return streampage.stream(server.url, pages=streampage.PageNumber(stop=6)).records("items")

    folder = tmp_path / "x"
    await fetch().into(JSONLines(f"{folder}/"), batch=4)
    before = visible(folder)
    journal = (folder / ".streampage" / "journal").read_bytes()
    for mode in ("resume", "replace", "new"):
        with pytest.raises(streampage.ConfigurationError) as info:
            await fetch().into(Parquet(f"{folder}/"), batch=4, mode=mode)  # type: ignore[arg-type]
        assert f"{folder}/ holds JSON Lines (its journal, part-000001.jsonl), not Parquet" in str(
            info.value
        )
        assert f"JSONLines('{folder}/') (--format jsonl)" in str(info.value)
        assert visible(folder) == before
        assert (folder / ".streampage" / "journal").read_bytes() == journal
    stats = await fetch().into(JSONLines(f"{folder}/"), resume=True)  # the lock is free
    assert stats.resumed_finished

    other = tmp_path / "y"
    await fetch().into(Parquet(f"{other}/"), batch=4)
    for sink in (JSONLines(f"{other}/"), JSONLines(f"{other}/", gzip=True)):
        with pytest.raises(streampage.ConfigurationError) as info:
            await fetch().into(sink, batch=4, resume=True)
        assert f"{other}/ holds Parquet (its journal, part-000003.parquet)" in str(info.value)
        assert f"Parquet('{other}/') (--format parquet)" in str(info.value)
    assert visible(other) == ["part-000003.parquet"]
    assert sorted(r["id"] for r in dataset_rows(other)) == list(range(1, 13))


async def test_a_folder_holding_two_formats_or_another_sinks_file_is_refused(
    tmp_path: Path,
) -> None:
    from streampage.sinks import JSONLines

    folder = tmp_path / "x"
    sink = JSONLines(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.close()
    pq.write_table(pa.Table.from_pylist(recs(2)), folder / "part-000002.parquet")  # mixed
    for other in (JSONLines(f"{folder}/"), Parquet(f"{folder}/")):
        with pytest.raises(streampage.ConfigurationError, match=r"holds JSON Lines .* and Parquet"):
            await other.open("run")
        await other.close()

    path = tmp_path / "out.data"  # one name, two sinks
    sink = JSONLines(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.close()
    with pytest.raises(streampage.ConfigurationError, match=r"holds JSON Lines \(its journal\)"):
        await Parquet(path).open("run")
    # a journal of an older version says no format: the file's first bytes do
    journal = state(path) / "journal"
    journal.write_bytes(journal.read_bytes().split(b"\n", 1)[1])
    with pytest.raises(streampage.ConfigurationError, match=r"holds JSON Lines \(out.data\)"):
        await Parquet(path).open("run")


# ---------------------------------------------------------------------- one checkpoint


@pytest.mark.parametrize("target", ["out.parquet", "out/"])
async def test_a_target_holds_one_checkpoint(tmp_path: Path, target: str) -> None:
    path = f"{tmp_path}/{target}"
    sink = Parquet(path)
    await sink.open("default")
    await sink.write(recs(1, 2))
    await sink.commit("default", cp(1))
    await sink.finish("default")
    await sink.close()

    sink = Parquet(path)
    assert await sink.open("Default") is None
    with pytest.raises(streampage.ConfigurationError) as info:
        await sink.write(recs(1, 2))
    assert str(info.value).startswith(
        f"{path} holds checkpoint 'default', not 'Default': a "
    ) and str(info.value).endswith(
        "one output, so one checkpoint. Pass checkpoint='default' (--checkpoint default) to "
        "go on with it, or mode='replace' (--replace) to start it over"
    )
    with pytest.raises(streampage.ConfigurationError, match="holds checkpoint 'default'"):
        await sink.commit("Default", cp(1))
    await sink.close()
    read = rows if target.endswith(".parquet") else dataset_rows
    assert read(Path(path)) == recs(1, 2)

    sink = Parquet(path)  # a replace: whatever its name was
    assert await sink.open("Default") is None
    await sink.replace("Default")
    await sink.write(recs(3))
    await sink.commit("Default", cp(1))
    await sink.finish("Default")
    await sink.close()
    assert read(Path(path)) == recs(3)
    assert await stored(path, "Default") == cp(1)


# ---------------------------------------------------------------------- compaction


def lines(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_bytes().splitlines()]


async def test_open_compacts_a_long_journal_and_resumes_exactly(tmp_path: Path) -> None:
    """Past 64 lines, open rewrites the journal with what replaying it gives: the last
    checkpoint, the parts committed and not merged (and the last merged one, so that a lost
    output is still an error)."""
    path = tmp_path / "out.parquet"
    sink = Parquet(path)
    await sink.open("run")
    await sink.write(recs(0))
    await sink.commit("run", cp(0))
    await sink.finish("run")  # part 1 in the file
    await sink.close()
    sink = Parquet(path)
    await sink.open("run")
    for n in range(1, 80):  # staged, never merged: a run that keeps failing
        if n % 10 == 0:
            await sink.write(recs(n))
        await sink.commit("run", cp(n))
    await sink.write(recs(80))  # written, never committed
    crash(sink)
    journal = state(path) / "journal"
    assert len(lines(journal)) == 81

    again = Parquet(path)
    assert await again.open("run") == cp(79)
    assert lines(journal) == [
        {"format": "parquet"},
        {"name": "run", "checkpoint": {"n": 79}, "parts": list(range(1, 9))},
    ]
    assert parts(path) == [f"part-00000{k}.arrow" for k in range(2, 9)]
    await again.write(recs(81))
    await again.commit("run", cp(81))
    await again.finish("run")
    await again.close()
    assert rows(path) == recs(0, *range(10, 80, 10), 81)


async def test_a_compacted_folder_replace_is_finished_exactly(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.close()
    sink = Parquet(f"{folder}/")
    await sink.open("run")
    await sink.replace("run")
    for n in range(10, 80):
        await sink.write(recs(n))
        await sink.commit("run", cp(n))
    crash(sink)

    again = Parquet(f"{folder}/")
    assert await again.open("run") == cp(79)
    journal = folder / ".streampage" / "journal"
    assert [sorted(e) for e in lines(journal)] == [
        ["format"],
        ["replace"],
        ["checkpoint", "name", "parts"],
    ]
    assert lines(journal)[2]["parts"] == list(range(2, 72))
    assert dataset_rows(folder) == recs(1)  # the old output, until finish
    await again.finish("run")
    await again.close()
    assert visible(folder) == ["part-000071.parquet"]
    assert dataset_rows(folder) == recs(*range(10, 80))
    assert await stored(f"{folder}/", "run") == cp(79)


# ---------------------------------------------------------------------- real SIGKILL

_CHILD = """
import asyncio, sys, msgspec
from streampage.sinks import Parquet

async def main():
    sink = Parquet(sys.argv[1], part_rows=int(sys.argv[2]), row_group_rows=1)
    found = await sink.open("run")
    n = 0 if found is None else msgspec.json.decode(found)["n"]
    print(n, flush=True)
    for i in range(n + 1, int(sys.argv[3]) + 1):
        await sink.write([{"batch": i, "row": j} for j in range(i % 3 + 1)])
        await sink.commit("run", msgspec.json.encode({"n": i}))
    await sink.finish("run")
    await sink.close()
    print("done", flush=True)

asyncio.run(main())
"""


def batch_rows(batches: range) -> list[dict[str, int]]:
    return [{"batch": i, "row": j} for i in batches for j in range(i % 3 + 1)]


def run_killed(
    target: str, part_rows: int, batches: int, seed: int, watch: Any = None
) -> list[int]:
    """Run the child (writing ``batches`` batches to ``target``) and SIGKILL it at random
    moments until it finishes; ``watch()`` is called in a loop while it runs. Returns the
    batch each run resumed from."""
    args = [sys.executable, "-c", _CHILD, target, str(part_rows), str(batches)]
    rng = random.Random(seed)
    seen = [0]
    for _ in range(12):
        child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        seen.append(int(child.stdout.readline()))  # opened: the run is under way
        until = time.monotonic() + rng.uniform(0, 0.25)
        while time.monotonic() < until:
            if watch is not None:
                watch()
            else:
                time.sleep(0.005)
        child.kill()
        child.wait()
        rest = child.stdout.read()
        child.stdout.close()
        if "done" in rest:
            return seen
    done = subprocess.run(args, capture_output=True, text=True)
    assert "done" in done.stdout, done.stderr
    return seen


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_at_any_moment_then_resume_is_exactly_once(tmp_path: Path) -> None:
    """A process writing 40 batches is killed at random moments (mid-write, between write
    and commit, mid-journal, mid-merge) and started again until it finishes: the file holds
    every batch once, in order, one row group each, and no resume ever goes backwards."""
    path = tmp_path / "out.parquet"
    seen = run_killed(str(path), 10**6, 40, seed=8)
    assert seen == sorted(seen)
    assert rows(path) == batch_rows(range(1, 41))
    assert row_groups(path) == [i % 3 + 1 for i in range(1, 41)]
    assert parts(path) == []
    assert visible(tmp_path) == ["out.parquet"]


def committed_batches(folder: Path) -> int:
    """The last batch the folder's journal says is committed (read as another process)."""
    last = 0
    journal = folder / ".streampage" / "journal"
    if journal.exists():
        for line in journal.read_bytes().split(b"\n")[:-1]:
            entry = json.loads(line)
            if "checkpoint" in entry:
                last = entry["checkpoint"]["n"]
    return last


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_folder_read_while_its_writer_is_killed_shows_only_whole_committed_batches(
    tmp_path: Path,
) -> None:
    """While a process publishing parts every ~7 rows is SIGKILLed at random moments, the
    folder is read with pyarrow.dataset in a loop: never an error, never a row the journal
    does not call committed, never part of a batch. Resumed, it holds every row once."""
    folder = tmp_path / "items"
    reads: list[int] = []

    def watch() -> None:
        got = dataset_rows(folder)  # raises on a partial or foreign file
        committed = committed_batches(folder)  # after the read: it only grows
        batches = sorted({r["batch"] for r in got})
        assert batches == list(range(1, len(batches) + 1)), batches  # published in order
        assert sorted(got, key=lambda r: (r["batch"], r["row"])) == batch_rows(
            range(1, len(batches) + 1)
        )  # whole batches, each once
        assert len(batches) <= committed
        reads.append(len(batches))

    seen = run_killed(f"{folder}/", 7, 150, seed=3, watch=watch)
    assert seen == sorted(seen)
    assert len(reads) > 20 and max(reads) > 0  # the reader did look, and saw parts come
    assert sorted(dataset_rows(folder), key=lambda r: (r["batch"], r["row"])) == batch_rows(
        range(1, 151)
    )
    assert parts(folder) == []


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
    assert visible(tmp_path) == ["items.parquet"]


async def test_into_a_parquet_folder_end_to_end(tmp_path: Path, page_server: Any) -> None:
    server = await page_server(pages=10, per_page=3)
    folder = tmp_path / "items"
    s = streampage.stream(server.url, pages=streampage.PageNumber(stop=10), concurrency=4)
    await s.records("items").into(Parquet(f"{folder}/"), batch=6)
    assert len(visible(folder)) == 1
    assert sorted(r["id"] for r in dataset_rows(folder)) == list(range(1, 31))
    again = streampage.stream(server.url, pages=streampage.PageNumber(stop=10))
    await again.records("items").into(Parquet(f"{folder}/"), batch=6, mode="replace")
    assert len(visible(folder)) == 1  # the old part gone, the new one published
    assert sorted(r["id"] for r in dataset_rows(folder)) == list(range(1, 31))


async def test_into_parquet_resumes_after_a_failure(tmp_path: Path, page_server: Any) -> None:
    server = await page_server(pages=12, per_page=2, fail={7: 404})
    path = tmp_path / "items.parquet"
    first = streampage.stream(
        server.url, pages=streampage.PageNumber(stop=12), ordered=True, concurrency=1
    )
    with pytest.raises(streampage.HTTPStatusError):
        await first.records("items").into(Parquet(path), batch=4)
    # pages 1..6 were committed (two pages a batch), staged: the file is made at the end
    assert not path.exists()
    assert len(parts(path)) == 3

    server.fail.clear()
    asked = len(server.requests)
    again = streampage.stream(server.url, pages=streampage.PageNumber(stop=12), concurrency=4)
    await again.records("items").into(Parquet(path), batch=4, resume=True)
    assert sorted(r["id"] for r in rows(path)) == list(range(1, 25))  # each exactly once
    assert not set(server.requests[asked:]) & set(range(1, 7))  # committed: not fetched again

    with pytest.raises(streampage.ConfigurationError, match="resume"):
        await (
            streampage.stream(server.url, pages=streampage.PageNumber(stop=12))
            .records("items")
            .into(Parquet(path))
        )


async def test_a_merged_file_gathers_batches_into_large_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = Sink(path, row_group_rows=5)
    await sink.open("run")
    for n in range(1, 7):  # six batches of 2 rows
        await sink.write([{"batch": n, "row": r} for r in range(2)])
        await sink.commit("run", b"{}")
    await sink.finish("run")
    await sink.close()
    assert row_groups(path) == [6, 6]  # gathered past 5 rows, then the rest
    assert len(rows(path)) == 12
    assert Sink(tmp_path / "d.parquet").row_group_rows == 131_072

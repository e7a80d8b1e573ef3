"""The JSON Lines sink: one file appended in place, or a folder of published parts; exactly
once across crashes, one writer at a time, nothing visible but the output.

A crash is simulated by ``crash(sink)``: the sink lets go of its files and lock without
``close()`` or ``finish()``, which is what SIGKILL leaves. The tests at the end kill real
processes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

import streampage
from streampage import PageNumber
from streampage.sinks import JSONLines


def recs(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def cp(n: int) -> bytes:
    return msgspec.json.encode({"n": n})


def ids(path: Path) -> list[int]:
    """The ids in a JSON Lines file (gzip by its name), in order."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data) if data else b""
    return [json.loads(line)["id"] for line in data.splitlines()]


def folder_ids(folder: Path) -> list[int]:
    """A folder read as a reader globbing its parts would, parts in name order."""
    return [i for part in sorted(folder.glob("part-*.jsonl*")) for i in ids(part)]


def crash(sink: JSONLines) -> None:
    """What SIGKILL leaves: files as written, nothing published, the lock let go."""
    sink._shut()


def state(path: Path) -> Path:
    """The hidden state folder of a file target."""
    return path.with_name(f".{path.name}.streampage")


def visible(folder: Path) -> list[str]:
    """What a reader listing the folder sees: every name not starting with a dot."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


async def run(sink: JSONLines, *batches: list[int], finish: bool = True, n: int = 1) -> None:
    """A run: open, a commit per batch (checkpoints n, n+1, ...), finish, close."""
    await sink.open("run")
    for i, batch in enumerate(batches):
        await sink.write(recs(*batch))
        await sink.commit("run", cp(n + i))
    if finish:
        await sink.finish("run")
    await sink.close()


# ---------------------------------------------------------------------- one file


async def test_a_file_is_appended_in_place_with_its_state_hidden(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    sink = JSONLines(path)
    assert isinstance(sink, streampage.sinks.Sink)
    await run(sink, [1, 2], [3])
    assert ids(path) == [1, 2, 3]
    assert visible(tmp_path) == ["items.jsonl"]
    assert sorted(p.name for p in state(path).iterdir()) == ["journal", "lock"]
    assert state(path).stat().st_mode & 0o777 == 0o700
    assert (state(path) / "journal").stat().st_mode & 0o777 == 0o600
    assert (state(path) / "lock").stat().st_mode & 0o777 == 0o600

    again = JSONLines(path)
    assert await again.open("run") == cp(2)
    assert await again.open("other") is None  # open again: the same sink may
    await again.write(recs(4))
    await again.commit("run", cp(3))
    await again.close()
    assert ids(path) == [1, 2, 3, 4]


async def test_what_no_commit_covers_is_cut_by_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl.gz"
    sink = JSONLines(path)
    await sink.open("run")
    await sink.write(recs(1))
    await sink.commit("run", cp(1))
    await sink.write(recs(2))  # never committed: dropped by close
    await sink.close()
    with open(path, "ab") as f:  # noqa: ASYNC230 - killed after the data, before the journal
        f.write(gzip.compress(b'{"id": 3}\n{"id'))

    again = JSONLines(path)
    assert await again.open("run") == cp(1)
    await again.write(recs(4))
    await again.commit("run", cp(2))
    await again.close()
    assert ids(path) == [1, 4]


@pytest.mark.parametrize("torn", [b'{"name":"run","checkpoint":{"n":', b'{"name":"run"}'])
async def test_a_torn_last_journal_line_is_no_commit(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1])
    journal = state(path) / "journal"
    good = journal.read_bytes()
    journal.write_bytes(good + torn)  # no newline: the append was cut short

    sink = JSONLines(path)
    assert await sink.open("run") == cp(1)
    assert journal.read_bytes() == good  # cut, so that the next line follows a whole one
    await sink.close()


async def test_a_journal_damaged_before_its_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1], [2])
    journal = state(path) / "journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"garbage\n" + lines[1])
    sink = JSONLines(path)
    with pytest.raises(streampage.ConfigurationError, match="line 1"):
        await sink.open("run")
    await sink.close()
    assert ids(path) == [1, 2]  # nothing cut on a guess


async def test_a_file_without_a_journal_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 999}\n')
    sink = JSONLines(path)
    with pytest.raises(streampage.ConfigurationError, match="remove it"):
        await sink.open("run")
    await sink.close()
    assert ids(path) == [999]


async def test_the_old_journal_beside_the_file_is_moved_into_the_state_folder(
    tmp_path: Path,
) -> None:
    """An output written before the state folder existed (``items.jsonl.journal`` beside
    it) still resumes, and nothing is left beside it."""
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1, 2])
    old = tmp_path / "items.jsonl.journal"
    (state(path) / "journal").rename(old)
    with open(path, "ab") as f:  # noqa: ASYNC230 - uncommitted bytes of a killed run
        f.write(b'{"id": 3}\n')
    assert visible(tmp_path) == ["items.jsonl", "items.jsonl.journal"]

    sink = JSONLines(path)
    assert await sink.open("run") == cp(1)
    assert visible(tmp_path) == ["items.jsonl"]
    await sink.write(recs(4))
    await sink.commit("run", cp(2))
    await sink.close()
    assert ids(path) == [1, 2, 4]


# ---------------------------------------------------------------------- one writer


async def test_a_second_open_on_the_same_target_is_refused_until_close(tmp_path: Path) -> None:
    """Two runs on one target would each commit the same pages: the second open fails at
    once, naming the holder, whatever checkpoint name it asks for."""
    for target in (tmp_path / "items.jsonl", f"{tmp_path}/folder/"):
        first = JSONLines(target)
        await first.open("run")
        second = JSONLines(target)
        with pytest.raises(streampage.CheckpointInUseError) as info:
            await second.open("another-name")
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(info.value)
        assert str(target).rstrip("/") in str(info.value)
        await second.close()
        await first.close()
        assert await second.open("run") is None  # free at once
        await second.close()


_HOLDER = """
import asyncio, sys
from streampage.sinks import JSONLines

async def main():
    await JSONLines(sys.argv[1]).open("run")
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("target", ["items.jsonl", "items/"])
async def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path: Path, target: str) -> None:
    path = f"{tmp_path}/{target}"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, path, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        sink = JSONLines(path)
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
    sink = JSONLines(f"{folder}/")
    assert repr(sink) == f"JSONLines('{folder}/')"
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    assert visible(folder) == []  # committed, hidden until the run ends
    await sink.close()
    assert visible(folder) == ["part-000001.jsonl"]
    assert folder_ids(folder) == [1, 2, 3]

    await run(JSONLines(folder), [4], n=3)  # an existing directory is a folder target
    assert visible(folder) == ["part-000001.jsonl", "part-000002.jsonl"]
    assert folder_ids(folder) == [1, 2, 3, 4]
    assert (folder / ".streampage").stat().st_mode & 0o777 == 0o700
    assert (folder / ".streampage" / "journal").stat().st_mode & 0o777 == 0o600


async def test_a_gzip_folder_publishes_every_part_rows_rows(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    sink = JSONLines(f"{folder}/", gzip=True, part_rows=3)
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    assert visible(folder) == []
    await sink.write(recs(3))
    await sink.commit("run", cp(2))  # 3 rows: published at once, by a rename
    assert visible(folder) == ["part-000001.jsonl.gz"]
    await sink.write(recs(4))
    await sink.commit("run", cp(3))
    await sink.write(recs(5))  # never committed
    await sink.close()  # a failed run: what was committed is published all the same
    assert visible(folder) == ["part-000001.jsonl.gz", "part-000002.jsonl.gz"]
    assert folder_ids(folder) == [1, 2, 3, 4]


async def test_a_killed_folder_run_is_published_by_the_next_open(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    sink = JSONLines(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(1, 2))
    await sink.commit("run", cp(1))
    crash(sink)
    (hidden,) = (folder / ".streampage" / "parts").iterdir()
    with open(hidden, "ab") as f:  # noqa: ASYNC230 - written, never journalled
        f.write(b'{"id": 3}\n{"i')
    assert visible(folder) == []

    again = JSONLines(f"{folder}/")
    assert await again.open("run") == cp(1)
    assert visible(folder) == ["part-000001.jsonl"]  # cut to its commit, then published
    assert folder_ids(folder) == [1, 2]
    await again.write(recs(3))
    await again.commit("run", cp(2))
    await again.close()
    assert folder_ids(folder) == [1, 2, 3]


async def test_a_folder_with_foreign_parts_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    folder.mkdir()
    (folder / "part-000001.jsonl").write_text('{"id": 1}\n')
    sink = JSONLines(folder)
    with pytest.raises(streampage.ConfigurationError, match="no journal"):
        await sink.open("run")
    await sink.close()
    assert folder_ids(folder) == [1]


async def test_adding_to_a_folder_touches_none_of_its_parts(tmp_path: Path) -> None:
    folder = tmp_path / "items"
    await run(JSONLines(f"{folder}/"), list(range(10_000)))
    (part,) = folder.glob("part-*")
    before = part.stat()
    for n in range(3):
        await run(JSONLines(f"{folder}/"), [10_000 + n], n=2 + n)
    after = part.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert len(visible(folder)) == 4
    assert folder_ids(folder) == [*range(10_000), 10_000, 10_001, 10_002]


# ---------------------------------------------------------------------- replace


async def test_replace_keeps_the_old_file_until_finish(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1, 2])

    sink = JSONLines(path)
    assert await sink.open("run") == cp(1)
    await sink.replace("run")
    await sink.write(recs(10))
    await sink.commit("run", cp(10))
    crash(sink)  # killed mid-replace: the old file is the output
    assert ids(path) == [1, 2]
    assert visible(tmp_path) == ["items.jsonl"]

    resumed = JSONLines(path)
    assert await resumed.open("run") == cp(10)  # the replace, to go on with
    await resumed.write(recs(11))
    await resumed.commit("run", cp(11))
    await resumed.close()  # a failed run: still the old file
    assert ids(path) == [1, 2]

    last = JSONLines(path)
    assert await last.open("run") == cp(11)
    await last.finish("run")
    await last.write(recs(12))  # after finish, commits go to the new file itself
    await last.commit("run", cp(12))
    await last.close()
    assert ids(path) == [10, 11, 12]
    assert sorted(p.name for p in state(path).iterdir()) == ["journal", "lock"]

    again = JSONLines(path)
    assert await again.open("run") == cp(12)
    await again.close()


async def test_replace_again_starts_the_replace_over(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1])
    sink = JSONLines(path)
    await sink.open("run")
    await sink.replace("run")
    await sink.write(recs(2))
    await sink.commit("run", cp(2))
    crash(sink)

    again = JSONLines(path)
    assert await again.open("run") == cp(2)
    await again.replace("run")  # the unfinished replace is discarded
    await again.write(recs(3))
    await again.commit("run", cp(3))
    await again.finish("run")
    await again.close()
    assert ids(path) == [3]


async def test_a_replace_killed_after_its_rename_is_completed_by_open(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1])
    sink = JSONLines(path)
    await sink.open("run")
    await sink.replace("run")
    await sink.write(recs(2))
    await sink.commit("run", cp(2))
    crash(sink)
    # finish(): renamed into place, killed before the journal said "replaced"
    os.replace(state(path) / "replacing", path)

    again = JSONLines(path)
    assert await again.open("run") == cp(2)
    await again.write(recs(3))  # goes on in the new file
    await again.commit("run", cp(3))
    await again.finish("run")
    await again.close()
    assert ids(path) == [2, 3]
    assert b'"replaced"' in (state(path) / "journal").read_bytes()


async def test_replace_in_a_folder_publishes_at_finish_and_drops_the_old_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "items"
    await run(JSONLines(f"{folder}/"), [1, 2, 3])
    assert visible(folder) == ["part-000001.jsonl"]

    sink = JSONLines(f"{folder}/", part_rows=2)
    assert await sink.open("run") == cp(1)
    await sink.replace("run")
    for i in (10, 12):
        await sink.write(recs(i, i + 1))  # part_rows reached: still hidden, a replace
        await sink.commit("run", cp(i))
    await sink.close()
    assert folder_ids(folder) == [1, 2, 3]

    sink = JSONLines(f"{folder}/", part_rows=2)
    assert await sink.open("run") == cp(12)

    def killed(*args: Any) -> None:
        raise SystemExit("killed after the journal said replaced")

    monkeypatch.setattr("streampage.sinks.jsonl.drop_below", killed)
    with pytest.raises(SystemExit):
        await sink.finish("run")
    crash(sink)
    monkeypatch.undo()
    assert folder_ids(folder) == [1, 2, 3]  # nothing deleted or published yet

    again = JSONLines(f"{folder}/")
    assert await again.open("run") == cp(12)  # rolled forward
    await again.close()
    assert visible(folder) == ["part-000002.jsonl", "part-000003.jsonl"]
    assert folder_ids(folder) == [10, 11, 12, 13]


# ---------------------------------------------------------------------- end to end


async def test_into_a_file_and_a_folder_and_replace_them(page_server: Any, tmp_path: Path) -> None:
    server = await page_server(pages=6, per_page=2)
    folder = tmp_path / "items"
    path = tmp_path / "items.jsonl"

    def fetch() -> Any:
        return streampage.stream(server.url, pages=PageNumber(stop=6)).records("items")

    await fetch().into(JSONLines(f"{folder}/"), batch=4)
    await fetch().into(JSONLines(path), batch=4)
    assert sorted(folder_ids(folder)) == sorted(ids(path)) == list(range(1, 13))
    await fetch().into(JSONLines(f"{folder}/"), batch=4, mode="replace")
    await fetch().into(JSONLines(path), batch=4, mode="replace")
    assert sorted(folder_ids(folder)) == sorted(ids(path)) == list(range(1, 13))  # once
    assert len(visible(folder)) == 1
    assert visible(tmp_path) == ["items", "items.jsonl"]


# ---------------------------------------------------------------------- real SIGKILL

_CHILD = """
import asyncio, sys, msgspec
from streampage.sinks import JSONLines

async def main():
    sink = JSONLines(sys.argv[1], part_rows=7)
    found = await sink.open("run")
    n = 0 if found is None else msgspec.json.decode(found)["n"]
    print(n, flush=True)
    for i in range(n + 1, 601):
        await sink.write([{"id": i, "row": j} for j in range(i % 3 + 1)])
        await sink.commit("run", msgspec.json.encode({"n": i}))
    await sink.close()
    print("done", flush=True)

asyncio.run(main())
"""


def committed_batches(folder: Path) -> int:
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
    """While a process writing 600 batches to a folder is SIGKILLed at random moments, a
    reader globs its parts in a loop: every line whole, never a row the journal does not
    call committed, never part of a batch. Resumed to the end, every row is there once."""
    folder = tmp_path / "items"
    rng = random.Random(5)
    reads: list[int] = []
    args = [sys.executable, "-c", _CHILD, f"{folder}/"]
    for _ in range(12):
        child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        child.stdout.readline()
        until = time.monotonic() + rng.uniform(0, 0.12)
        while time.monotonic() < until:
            got = [r for p in sorted(folder.glob("part-*.jsonl")) for r in jsonl_rows(p)]
            committed = committed_batches(folder)
            batches = sorted({r["id"] for r in got})
            assert batches == list(range(1, len(batches) + 1))
            assert len(got) == sum(i % 3 + 1 for i in batches)  # whole batches, each once
            assert len(batches) <= committed
            reads.append(len(batches))
        child.kill()
        child.wait()
        rest = child.stdout.read()
        child.stdout.close()
        if "done" in rest:
            break
    else:
        done = subprocess.run(args, capture_output=True, text=True)
        assert "done" in done.stdout, done.stderr
    assert len(reads) > 20 and max(reads) > 0
    got = [r for p in sorted(folder.glob("part-*.jsonl")) for r in jsonl_rows(p)]
    assert got == [{"id": i, "row": j} for i in range(1, 601) for j in range(i % 3 + 1)]


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]

"""The JSON Lines sink: one file appended in place, or a folder of published parts; exactly
once across crashes, one writer at a time, nothing visible but the output.

A crash is simulated by ``crash(sink)``: the sink lets go of its files and lock without
``close()`` or ``finish()``, which is what SIGKILL leaves. The tests at the end kill real
processes.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
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
    assert await again.open("other") is None
    assert await again.open("run") == cp(2)  # open again: the same sink may
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


# ---------------------------------------------------------------------- a target's format


async def test_a_folder_is_refused_in_another_format_before_anything_is_touched(
    tmp_path: Path,
) -> None:
    """A folder's format is part of what it is: gzip parts beside plain ones would each be
    read by some readers and not others. The journal says which; another format is refused
    at open, before a byte is cut, and the lock is let go."""
    folder = tmp_path / "items"
    await run(JSONLines(f"{folder}/"), [1, 2])
    sink = JSONLines(f"{folder}/")
    await sink.open("run")
    await sink.write(recs(3))
    await sink.commit("run", cp(2))
    crash(sink)  # committed, hidden: a later open publishes it
    (hidden,) = (folder / ".streampage" / "parts").iterdir()
    with open(hidden, "ab") as f:  # noqa: ASYNC230 - written, never journalled
        f.write(b'{"id": 4}\n')
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "lock"}

    gz = JSONLines(f"{folder}/", gzip=True)
    with pytest.raises(streampage.ConfigurationError) as info:
        await gz.open("run")
    await gz.close()
    message = str(info.value)
    assert f"{folder}/ holds JSON Lines (its journal, part-000001.jsonl), not gzip" in message
    assert f"JSONLines('{folder}/') (--format jsonl)" in message
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "lock"}
    assert after == before  # nothing published, cut or journalled

    again = JSONLines(f"{folder}/")  # the lock was let go; the right format goes on
    assert await again.open("run") == cp(2)
    await again.close()
    assert folder_ids(folder) == [1, 2, 3]
    with pytest.raises(streampage.ConfigurationError, match="--format jsonl"):
        await run(JSONLines(f"{folder}/", gzip=True), [5], n=3)


async def test_a_file_is_refused_in_another_format(tmp_path: Path) -> None:
    path = tmp_path / "items.out"
    await run(JSONLines(path), [1])
    sink = JSONLines(path, gzip=True)
    with pytest.raises(streampage.ConfigurationError) as info:
        await sink.open("run")
    await sink.close()
    assert f"{path} holds JSON Lines (its journal), not gzip JSON Lines" in str(info.value)
    assert f"JSONLines('{path}')" in str(info.value)
    assert ids(path) == [1]

    gz = tmp_path / "items.jsonl.gz"
    await run(JSONLines(gz), [1])
    with pytest.raises(streampage.ConfigurationError, match=r"gzip=True\)"):
        await run(JSONLines(gz, gzip=False), [2])
    assert ids(gz) == [1]


async def test_a_journal_of_an_older_version_is_told_by_its_output(tmp_path: Path) -> None:
    """A journal without a format line (written by an earlier version) is judged by what
    the target holds, and gets the line with its next commit."""
    folder, path = tmp_path / "items", tmp_path / "items.jsonl.gz"
    for target in (f"{folder}/", path):
        await run(JSONLines(target, gzip=True), [1])
    for journal in (folder / ".streampage" / "journal", state(path) / "journal"):
        lines = journal.read_bytes().splitlines(keepends=True)
        assert json.loads(lines[0]) == {"format": "jsonl.gz"}
        journal.write_bytes(b"".join(lines[1:]))
    for target in (f"{folder}/", path):
        with pytest.raises(streampage.ConfigurationError, match="holds gzip JSON Lines"):
            await run(JSONLines(target, gzip=False), [2])
    for target in (f"{folder}/", path):
        await run(JSONLines(target, gzip=True), [2], n=2)
    for journal in (folder / ".streampage" / "journal", state(path) / "journal"):
        assert b'{"format":"jsonl.gz"}\n{"name":"run"' in journal.read_bytes()
    assert folder_ids(folder) == ids(path) == [1, 2]


# ---------------------------------------------------------------------- one checkpoint


async def test_a_target_holds_one_checkpoint(page_server: Any, tmp_path: Path) -> None:
    """A resume under another checkpoint name would start over and write every record a
    second time: the first write or commit is refused, naming the checkpoint the target
    holds. A replace starts it over under any name."""
    server = await page_server(pages=6, per_page=2)

    def fetch() -> Any:
        return streampage.stream(server.url, pages=PageNumber(stop=6)).records("items")

    for target in (tmp_path / "items.jsonl", f"{tmp_path}/items/"):
        read = ids if isinstance(target, Path) else folder_ids

        await fetch().into(JSONLines(target), batch=4)
        with pytest.raises(streampage.ConfigurationError) as info:
            await fetch().into(JSONLines(target), batch=4, checkpoint="Default", resume=True)
        assert (
            f"{target} holds checkpoint 'default', not 'Default': a " in str(info.value)
            and "checkpoint='default' (--checkpoint default) to go on with it, or "
            "mode='replace' (--replace) to start it over"
            in str(info.value)
        )
        assert sorted(read(Path(target))) == list(range(1, 13))  # nothing written twice

        await fetch().into(JSONLines(target), batch=4, checkpoint="Default", mode="replace")
        assert sorted(read(Path(target))) == list(range(1, 13))
        stats = await fetch().into(JSONLines(target), checkpoint="Default", resume=True)
        assert stats.resumed_finished
        with pytest.raises(streampage.ConfigurationError, match="holds checkpoint 'Default'"):
            await fetch().into(JSONLines(target), resume=True)
        assert sorted(read(Path(target))) == list(range(1, 13))


async def test_a_commit_under_another_name_is_refused_but_a_replace_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "items.jsonl"
    await run(JSONLines(path), [1])
    sink = JSONLines(path)
    assert await sink.open("other") is None
    with pytest.raises(streampage.ConfigurationError, match="holds checkpoint 'run'"):
        await sink.write(recs(2))
    with pytest.raises(streampage.ConfigurationError, match="holds checkpoint 'run'"):
        await sink.commit("other", cp(1))
    await sink.replace("other")  # an unfinished replace, under its own name
    await sink.write(recs(2))
    await sink.commit("other", cp(1))
    await sink.close()
    assert ids(path) == [1]

    sink = JSONLines(path)
    assert await sink.open("run") is None  # the replace under way holds "other"
    with pytest.raises(streampage.ConfigurationError, match="holds checkpoint 'other'"):
        await sink.commit("run", cp(9))
    assert await sink.open("other") == cp(1)
    await sink.finish("other")
    await sink.close()
    assert ids(path) == [2]


# ---------------------------------------------------------------------- compaction


def lines(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_bytes().splitlines()]


async def commits(sink: JSONLines, first: int, last: int) -> None:
    """A commit a record, ``first`` to ``last``, each under checkpoint n."""
    for n in range(first, last + 1):
        await sink.write(recs(n))
        await sink.commit("run", cp(n))


async def test_open_compacts_a_long_journal_and_resumes_exactly(tmp_path: Path) -> None:
    """Every commit adds a line (its whole checkpoint), and open reads them all: past 64
    lines open rewrites the journal with what replaying it gives, and nothing else."""
    path = tmp_path / "items.jsonl.gz"
    sink = JSONLines(path)
    await sink.open("run")
    await commits(sink, 1, 100)
    await sink.write(recs(101))  # written, never committed
    await sink.close()
    journal = state(path) / "journal"
    assert len(lines(journal)) == 101  # the format line and a line a commit

    sink = JSONLines(path)
    assert await sink.open("run") == cp(100)
    assert lines(journal) == [
        {"format": "jsonl.gz"},
        {"name": "run", "checkpoint": {"n": 100}, "offset": path.stat().st_size},
    ]
    await commits(sink, 101, 102)
    await sink.close()
    assert ids(path) == list(range(1, 103))
    assert sorted(p.name for p in state(path).iterdir()) == ["journal", "lock"]

    big = JSONLines(path)  # a few commits of big checkpoints: past 1 MiB
    await big.open("run")
    for n in range(103, 108):
        await big.write(recs(n))
        await big.commit("run", msgspec.json.encode({"n": n, "pad": "x" * 300_000}))
    await big.close()
    assert journal.stat().st_size > 1 << 20
    again = JSONLines(path)
    assert json.loads(await again.open("run") or b"")["n"] == 107
    await again.close()
    assert len(lines(journal)) == 2
    assert ids(path) == list(range(1, 108))


async def test_a_compacted_folder_replace_goes_on_with_its_hidden_parts(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "items"
    await run(JSONLines(f"{folder}/"), [1, 2])
    sink = JSONLines(f"{folder}/", part_rows=20)
    await sink.open("run")
    await sink.replace("run")
    await commits(sink, 10, 79)  # 70 commits: parts 2, 3, 4 full and 5 begun, all hidden
    crash(sink)
    journal = folder / ".streampage" / "journal"
    assert len(lines(journal)) == 73

    again = JSONLines(f"{folder}/", part_rows=20)
    assert await again.open("run") == cp(79)
    assert [e.get("part") for e in lines(journal)] == [None, None, 2, 3, 4, 5]
    assert lines(journal)[1] == {"replace": 2}
    await commits(again, 80, 81)
    crash(again)
    assert folder_ids(folder) == [1, 2]  # the old output, until finish

    last = JSONLines(f"{folder}/", part_rows=20)
    assert await last.open("run") == cp(81)
    await last.finish("run")
    await last.close()
    assert visible(folder) == [f"part-00000{k}.jsonl" for k in (2, 3, 4, 5)]
    assert folder_ids(folder) == list(range(10, 82))


async def test_a_compaction_killed_or_failed_at_any_step_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "items.jsonl"
    sink = JSONLines(path)
    await sink.open("run")
    await commits(sink, 1, 70)
    await sink.close()
    journal = state(path) / "journal"
    compacting = state(path) / "journal.compact"
    whole = journal.read_bytes()
    real_replace = os.replace

    def failing(error: BaseException) -> Any:
        def replace(src: Any, dst: Any) -> None:
            if Path(src) == compacting:
                raise error
            real_replace(src, dst)

        return replace

    # a failed rename (a full disk, say): the journal stays as it was, and open goes on
    monkeypatch.setattr(os, "replace", failing(OSError("no space left")))
    sink = JSONLines(path)
    assert await sink.open("run") == cp(70)
    assert journal.read_bytes() == whole and not compacting.exists()
    await commits(sink, 71, 71)
    await sink.close()
    whole = journal.read_bytes()

    # killed before the rename: the old journal, and the new one beside it, removed later
    monkeypatch.setattr(os, "replace", failing(SystemExit("killed")))
    sink = JSONLines(path)
    with pytest.raises(SystemExit):
        await sink.open("run")
    crash(sink)
    monkeypatch.undo()
    assert journal.read_bytes() == whole and compacting.exists()

    # killed after the rename, before the folder's fsync: the new journal, whole
    def killed(path: Path) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr("streampage.sinks._journal.fsync_dir", killed)
    sink = JSONLines(path)
    with pytest.raises(SystemExit):
        await sink.open("run")
    crash(sink)
    monkeypatch.undo()
    assert not compacting.exists() and len(lines(journal)) == 2

    sink = JSONLines(path)
    assert await sink.open("run") == cp(71)
    await commits(sink, 72, 72)
    await sink.close()
    assert ids(path) == list(range(1, 73))


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


async def test_gzip_compresslevel(tmp_path: Path) -> None:
    """``compresslevel`` is gzip's: 1 the fastest, 9 the smallest; either reads back."""
    records = [{"id": i, "name": f"item {i}", "tags": ["a", "b"] * (i % 4)} for i in range(3000)]
    sizes = {}
    for level in (1, 9):
        path = tmp_path / f"l{level}.jsonl.gz"
        sink = JSONLines(path, compresslevel=level)
        await sink.open("run")
        await sink.write(records)
        await sink.commit("run", b'{"n":1}')
        await sink.close()
        assert [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()] == (
            records
        )
        sizes[level] = path.stat().st_size
    assert sizes[9] < sizes[1]
    for bad in (-1, 10, 2.5):
        with pytest.raises(streampage.ConfigurationError, match="compresslevel"):
            JSONLines(tmp_path / "x.jsonl.gz", compresslevel=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- gzip's library

_BLOCKED = """
import asyncio, sys
sys.modules["deflate"] = None  # the deflate package is not importable: the standard library
from streampage.sinks import JSONLines
from streampage.sinks.jsonl import gzip_library

async def main(path, first, last, level):
    sink = JSONLines(path, compresslevel=level)
    await sink.open("run")
    for i in range(first, last + 1):
        await sink.write([{"id": i, "name": f"item {i}", "tags": ["a", "b"] * (i % 4)}])
        await sink.commit("run", b'{"n":%d}' % i)
    await sink.close()
    print(gzip_library())

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def gz_record(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item {i}", "tags": ["a", "b"] * (i % 4)}


def write_with_zlib(path: Path, first: int, last: int, level: int = 6) -> str:
    """Records ``first``..``last`` appended to ``path``, a commit each, by another process
    in which the deflate package cannot be imported; the library it says it used."""
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED, str(path), str(first), str(last), str(level)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def write_here(path: Path, first: int, last: int, level: int = 6) -> None:
    sink = JSONLines(path, compresslevel=level)
    await sink.open("run")
    await sink.write([gz_record(i) for i in range(first, last + 1)])
    await sink.commit("run", b'{"n":%d}' % last)
    await sink.close()


def gzip_members(data: bytes) -> list[tuple[bytes, bytes]]:
    """The gzip members of ``data``: each one's 10-byte header and its content, decompressed
    on its own (zlib stops at a member's end and leaves the rest)."""
    import zlib

    members = []
    while data:
        d = zlib.decompressobj(wbits=31)
        members.append((data[:10], d.decompress(data)))
        assert d.eof, "a member cut short"
        data = d.unused_data
    return members


def gzip_tests_ok(path: Path) -> None:
    """``gzip -t``: the file is whole, standard gzip to the tool too."""
    done = subprocess.run(["gzip", "-t", str(path)], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def written_by(header: bytes) -> str:
    """Which library wrote a gzip member, by its header: Python's gzip module stamps the
    time (MTIME, bytes 4-7), libdeflate leaves it 0."""
    return "libdeflate" if header[4:8] == bytes(4) else "zlib"


@pytest.mark.parametrize("level", [0, 1, 6, 9])
async def test_gzip_reads_back_with_the_standard_library_exactly(
    tmp_path: Path, level: int
) -> None:
    """Whichever library compresses, the file is standard gzip: Python's gzip module and
    ``gzip -t`` read it, to exactly the bytes msgspec encoded, record for record."""
    records = [gz_record(i) for i in range(5000)]
    path = tmp_path / "items.jsonl.gz"
    sink = JSONLines(path, compresslevel=level)
    await sink.open("run")
    await sink.write(records[:3000])
    await sink.commit("run", cp(1))
    await sink.write(records[3000:])
    await sink.commit("run", cp(2))
    await sink.close()
    data = gzip.decompress(path.read_bytes())
    assert data == msgspec.json.Encoder().encode_lines(records)
    assert [json.loads(line) for line in data.splitlines()] == records
    assert len(gzip_members(path.read_bytes())) == 2  # a member per commit
    gzip_tests_ok(path)


def test_libdeflate_compresses_when_installed() -> None:
    """streampage[speed] brings the deflate package; with it, libdeflate compresses (a test
    run without it would measure, and test, only the fallback)."""
    pytest.importorskip("deflate")
    from streampage.sinks.jsonl import gzip_library

    assert gzip_library() == "libdeflate"


async def test_gzip_without_libdeflate_and_appends_across_libraries(tmp_path: Path) -> None:
    """Without the deflate package the standard library compresses, the same levels; and a
    file goes on being appended to and resumed whichever library wrote its earlier members:
    here libdeflate (when installed), zlib, libdeflate again, then a kill (bytes past the
    last commit) cut off by a resume under zlib."""
    path = tmp_path / "items.jsonl.gz"
    await write_here(path, 1, 100)
    assert write_with_zlib(path, 101, 110) == "zlib"
    await write_here(path, 111, 200, level=1)
    with open(path, "ab") as f:  # noqa: ASYNC230 - a kill after the data, before the journal
        f.write(gzip.compress(b'{"id": 999}\n'))
    assert write_with_zlib(path, 201, 205, level=9) == "zlib"
    data = path.read_bytes()
    records = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert records == [gz_record(i) for i in range(1, 206)]
    members = [written_by(header) for header, _ in gzip_members(data)]
    here = "libdeflate" if importlib.util.find_spec("deflate") else "zlib"
    assert members == [here] + ["zlib"] * 10 + [here] + ["zlib"] * 5
    gzip_tests_ok(path)
    again = JSONLines(path)
    assert await again.open("run") == b'{"n":205}'
    await again.close()

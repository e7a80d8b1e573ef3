"""records() and into(): batches, checkpoints and resume, into JSON Lines and SQLite."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import HANG, Flaky

import streampage
from streampage import Cursor, PageNumber
from streampage._checkpoint import Checkpoint
from streampage.sinks import JSONLines, SQLite

PAGES = 12
PER_PAGE = 3
ALL_IDS = list(range(1, PAGES * PER_PAGE + 1))


def jsonl_ids(path: Path) -> list[int]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return sorted(json.loads(line)["id"] for line in f)


def sqlite_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return sorted(json.loads(row[0])["id"] for row in db.execute("SELECT data FROM items"))


async def test_records_extracts_by_path(page_server):
    server = await page_server(pages=PAGES, per_page=PER_PAGE)
    got = []
    async with streampage.stream(server.url, pages=PageNumber()).records("items") as records:
        async for record in records:
            got.append(record["id"])
    assert sorted(got) == ALL_IDS
    assert records.stats.records == len(ALL_IDS)


@pytest.mark.parametrize("name", ["items.jsonl", "items.jsonl.gz"])
async def test_into_json_lines_every_record_once(page_server, tmp_path, name):
    server = await page_server(pages=PAGES, per_page=PER_PAGE)
    out = tmp_path / name

    stats = (
        await streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(JSONLines(out), batch=5)
    )

    assert jsonl_ids(out) == ALL_IDS
    assert stats.records == len(ALL_IDS) and stats.committed_pages == PAGES
    assert out.with_name(f".{name}.streampage").joinpath("journal").exists()  # hidden


async def test_into_sqlite_every_record_once_with_the_checkpoint(page_server, tmp_path):
    server = await page_server(pages=PAGES, per_page=PER_PAGE)
    db = tmp_path / "out.db"

    await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(SQLite(db), batch=4, checkpoint="job")
    )

    assert sqlite_ids(db) == ALL_IDS
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(
            "SELECT checkpoint FROM streampage_checkpoints WHERE name = 'items/job'"
        ).fetchone()
    (source_state,) = json.loads(state)["sources"].values()
    assert source_state["pages"] == [[1, PAGES]]


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
async def test_a_failed_commit_then_resume_gives_every_record_once(page_server, tmp_path, kind):
    server = await page_server(pages=PAGES, per_page=PER_PAGE)

    def sink() -> Any:
        return JSONLines(tmp_path / "o.jsonl") if kind == "jsonl" else SQLite(tmp_path / "o.db")

    with pytest.raises(streampage.SinkError, match="No space left") as info:
        await (
            streampage.stream(server.url, pages=PageNumber(), concurrency=2)
            .records("items")
            .into(Flaky(sink(), fail_at=3), batch=PER_PAGE * 2)
        )
    assert "resume" in str(info.value)
    requests_before = len(server.requests)

    stats = (
        await streampage.stream(server.url, pages=PageNumber(), concurrency=2)
        .records("items")
        .into(sink(), batch=PER_PAGE * 2, resume=True)
    )

    ids = jsonl_ids(tmp_path / "o.jsonl") if kind == "jsonl" else sqlite_ids(tmp_path / "o.db")
    assert ids == ALL_IDS
    # the two committed batches (4 pages) were not fetched again
    resumed = server.requests[requests_before:]
    assert not {1, 2, 3, 4} & set(resumed)
    assert stats.committed_pages == PAGES - 4


async def test_an_existing_checkpoint_needs_resume(page_server, tmp_path):
    server = await page_server(pages=2)
    out = tmp_path / "o.jsonl"
    await streampage.stream(server.url, pages=PageNumber()).records("items").into(JSONLines(out))

    with pytest.raises(streampage.ConfigurationError, match=r"mode=.resume."):
        await (
            streampage.stream(server.url, pages=PageNumber()).records("items").into(JSONLines(out))
        )
    assert len(jsonl_ids(out)) == 2 * 3  # untouched


async def test_a_file_without_journal_is_not_overwritten(tmp_path, page_server):
    server = await page_server(pages=1)
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": 999}\n')

    with pytest.raises(streampage.ConfigurationError, match="remove it"):
        await streampage.stream(server.url, pages=PageNumber()).into(JSONLines(out))
    assert out.read_text() == '{"id": 999}\n'


async def test_uncommitted_lines_are_cut_on_resume(page_server, tmp_path):
    server = await page_server(pages=PAGES, per_page=PER_PAGE)
    out = tmp_path / "o.jsonl"
    with pytest.raises(streampage.SinkError):
        await (
            streampage.stream(server.url, pages=PageNumber())
            .records("items")
            .into(Flaky(JSONLines(out), fail_at=2), batch=PER_PAGE)
        )
    # a crash after data reached the file but before the journal entry: garbage at the end
    with open(out, "ab") as f:  # noqa: ASYNC230 - a test's setup
        f.write(b'{"id": 1}\n{"id": 2}\n{"id"')

    await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(JSONLines(out), batch=PER_PAGE, resume=True)
    )

    assert jsonl_ids(out) == ALL_IDS


async def test_a_cursor_walk_resumes_from_its_last_committed_page(tmp_path):
    from aiohttp import web

    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        n = int(request.query.get("cursor", "1"))
        seen.append(n)
        nxt = str(n + 1) if n < 10 else None
        return web.json_response({"items": [{"id": n}], "next": nxt})

    app = web.Application()
    app.router.add_get("/walk", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/walk"
    out = tmp_path / "walk.db"
    try:
        with pytest.raises(streampage.SinkError):
            await (
                streampage.stream(url, pages=Cursor(field="next"))
                .records("items")
                .into(Flaky(SQLite(out), fail_at=5), batch=1)
            )
        seen.clear()
        await (
            streampage.stream(url, pages=Cursor(field="next"))
            .records("items")
            .into(SQLite(out), batch=1, resume=True)
        )
    finally:
        await runner.cleanup()

    assert sqlite_ids(out) == list(range(1, 11))
    assert seen == [4, 5, 6, 7, 8, 9, 10]  # page 4, the last committed, once more for its link


def test_hang_guard_is_shared() -> None:
    assert HANG > 0


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
async def test_a_file_sinks_journal_is_the_owners_alone(page_server, tmp_path, kind):
    # the journal holds checkpoints (walk URLs among them): mode 0600, whatever the umask
    server = await page_server(pages=3)
    sink: Any
    if kind == "jsonl":
        sink = JSONLines(tmp_path / "out.jsonl")
    else:
        sink = streampage.sinks.Parquet(tmp_path / "out.parquet")

    await streampage.stream(server.url, pages=PageNumber(stop=3)).records("items").into(sink)

    assert sink.journal.exists()
    assert sink.journal.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------- sinks that stage


class SlowStaged:
    """A sink that stages, as the built-in ones do, and whose commits take ``delay``
    seconds: what each commit got (its batches' ids) and the checkpoint with them."""

    def __init__(self, delay: float, fail_on: int | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.commits: list[list[list[int]]] = []
        self.checkpoints: list[bytes] = []
        self.wanted, self.reached = 0, asyncio.Event()  # set when ``wanted`` are committed

    async def open(self, name: str) -> bytes | None:
        return None

    async def write(self, records: Any) -> None:
        raise AssertionError("a sink that stages gets its records through commit_staged")

    async def commit(self, name: str, checkpoint: bytes) -> None:
        raise AssertionError("a sink that stages gets its commits through commit_staged")

    def stage(self, records: list[Any]) -> list[int]:
        if self.fail_on is not None and any(r["id"] == self.fail_on for r in records):
            raise TypeError(f"record {self.fail_on} cannot be encoded")
        return [r["id"] for r in records]

    async def commit_staged(self, name: str, checkpoint: bytes, batches: Any) -> None:
        await asyncio.sleep(self.delay)
        self.commits.append([[i for chunk in batch for i in chunk] for batch in batches])
        self.checkpoints.append(checkpoint)
        if self.wanted and len(self.committed()) >= self.wanted:
            self.reached.set()

    async def close(self) -> None:
        pass

    def committed(self) -> list[int]:
        return [i for commit in self.commits for batch in commit for i in batch]


async def test_batches_that_fill_during_a_slow_commit_go_whole_into_the_next(page_server):
    """A group commit: the fetch goes on while a commit runs, and the batches that filled
    meanwhile are committed together, each still whole pages of ``batch`` records, with a
    checkpoint naming exactly the pages committed so far."""
    server = await page_server(pages=40, per_page=3)
    sink = SlowStaged(delay=0.05)
    stats = await (
        streampage.stream(server.url, pages=PageNumber(stop=40), concurrency=4)
        .records("items")
        .into(sink, batch=6)
    )
    assert stats.committed_pages == 40
    assert sorted(sink.committed()) == list(range(1, 121))
    batches = [batch for commit in sink.commits for batch in commit]
    assert all(len(batch) == 6 for batch in batches[:-1])  # two pages a batch
    assert any(len(commit) > 1 for commit in sink.commits), "no commit took two batches"
    done = 0
    for commit, checkpoint in zip(sink.commits, sink.checkpoints, strict=True):
        done += sum(len(batch) for batch in commit) // 3
        assert len(Checkpoint.from_json(checkpoint)) == done  # exactly the pages committed


async def test_a_full_batch_commits_while_the_stream_waits_for_its_next_page(page_server):
    """The batches waiting for a commit to end are committed when it ends, not when the
    next batch fills: a stream that waits (a held page, a rate limit) leaves nothing of
    what it delivered uncommitted."""
    server = await page_server(pages=10, per_page=3)
    gate = server.hold(9)
    sink = SlowStaged(delay=0.05)
    sink.wanted = 8 * 3  # pages 1-8, while page 9 waits
    run = asyncio.ensure_future(
        streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=1)
        .records("items")
        .into(sink, batch=3)
    )
    try:
        async with asyncio.timeout(HANG):
            await sink.reached.wait()
        assert not run.done()
    finally:
        gate.set()
    await run
    assert sink.committed() == list(range(1, 31))


async def test_a_record_a_sink_cannot_stage_fails_the_write(page_server):
    server = await page_server(pages=10, per_page=3)
    sink = SlowStaged(delay=0.0, fail_on=20)  # on page 7
    with pytest.raises(streampage.SinkError, match="failed to write: TypeError"):
        await (
            streampage.stream(server.url, pages=PageNumber(stop=10), concurrency=1)
            .records("items")
            .into(sink, batch=3)
        )
    assert sink.committed() == list(range(1, 19))  # the pages before it, none of its own

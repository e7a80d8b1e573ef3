"""Checkpoints: no secrets at rest, a fingerprint of the source, and finished runs.

A checkpoint lies on disk (a journal, a table row), so it must hold no credential; it must
refuse to be applied to another source's data; and a resume of a finished run must say so
and fetch only what is new.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import Flaky, cli_fetch, item
from yarl import URL

import streampage
from streampage import Cursor, PageNumber
from streampage._checkpoint import Checkpoint, at_rest, restored
from streampage._fingerprint import chosen_differs
from streampage.sinks import JSONLines, SQLite

PASSWORD = "pa55-w0rd-XYZ"
API_KEY = "KEY-7f3a9c-secret"
PAGES = 6
PER_PAGE = 4


class CursorAPI:
    """A cursor API that wants Basic credentials and an api_key on every request, and
    whose next links carry the api_key back (as many APIs' next URLs do)."""

    def __init__(self, pages: int = PAGES) -> None:
        self.pages = pages
        self.seen: list[str | None] = []  # the cursor of every request
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "no credentials"}, status=401)
        if request.query.get("api_key") != API_KEY:
            return web.json_response({"error": "no api key"}, status=403)
        cursor = request.query.get("cursor")
        self.seen.append(cursor)
        n = int(cursor.removeprefix("c")) if cursor else 1
        first = (n - 1) * PER_PAGE + 1
        records = [item(i) for i in range(first, first + PER_PAGE)]
        return web.json_response(
            {"data": records, "next_cursor": f"c{n + 1}" if n < self.pages else None}
        )


@pytest.fixture
async def cursor_api() -> AsyncIterator[CursorAPI]:
    api = CursorAPI()
    app = web.Application()
    app.router.add_get("/items", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"http://user:{PASSWORD}@127.0.0.1:{port}/items?api_key={API_KEY}"
    yield api
    await runner.cleanup()


def every_byte(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (hidden ones included)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def jsonl_ids(path: Path) -> list[int]:
    return sorted(json.loads(line)["id"] for line in path.read_text().splitlines())


# ---------------------------------------------------------------------- at rest


COMMAND = URL(f"https://user:{PASSWORD}@api.example/items?api_key={API_KEY}")


def test_a_walk_url_is_stored_without_the_commands_credentials() -> None:
    url = URL(f"https://user:{PASSWORD}@api.example/items?api_key={API_KEY}&cursor=a%2Bb%3D&x=1")
    stored = at_rest(url, COMMAND)
    assert PASSWORD not in stored and API_KEY not in stored and "user" not in stored
    assert stored == "https://api.example/items?cursor=a%2Bb%3D&x=1"  # the cursor byte for byte


def test_what_the_server_put_in_a_walk_url_stays_whatever_its_name() -> None:
    # a cursor named token, a per-page signature: the walk itself, which no command gives back
    url = URL(f"https://api.example/items?token=CURSOR-42&sig=abc&api_key={API_KEY}")
    stored = at_rest(url, COMMAND)
    assert stored == "https://api.example/items?token=CURSOR-42&sig=abc"
    back = restored(stored, COMMAND)
    assert back.query["token"] == "CURSOR-42" and back.query["api_key"] == API_KEY


def test_a_stored_walk_url_gets_the_command_urls_credentials_back() -> None:
    back = restored("https://api.example/items?cursor=a%2Bb%3D", COMMAND)
    assert back.user == "user" and back.password == PASSWORD
    assert back.query["api_key"] == API_KEY
    assert back.raw_query_string.startswith("cursor=a%2Bb%3D")


def test_a_walk_url_on_another_origin_gets_no_credentials() -> None:
    back = restored("https://cdn.example/items?cursor=c2", COMMAND)
    assert back.password is None and "api_key" not in back.query


def test_a_page_number_source_stores_no_page_url() -> None:
    checkpoint = Checkpoint()
    checkpoint.commit("k", 1, None, 3, 3)
    assert b"http" not in checkpoint.to_json()


async def test_secrets_never_reach_the_disk_and_a_resumed_walk_still_has_them(
    cursor_api: CursorAPI, tmp_path: Path
) -> None:
    out = tmp_path / "items.jsonl"

    def run() -> streampage.Records:
        pages = Cursor(field="next_cursor", param="cursor")
        return streampage.stream(cursor_api.url, pages=pages).records("data")

    with pytest.raises(streampage.SinkError, match="No space left"):
        await run().into(Flaky(JSONLines(out), fail_at=3), batch=PER_PAGE)
    assert cursor_api.seen[-1] is not None  # it got into the walk before failing

    stats = await run().into(JSONLines(out), batch=PER_PAGE, mode="resume")

    assert jsonl_ids(out) == list(range(1, PAGES * PER_PAGE + 1))
    assert stats.resumed_pages == 2
    data = every_byte(tmp_path)
    assert PASSWORD.encode() not in data and API_KEY.encode() not in data


async def test_secrets_never_reach_a_database(cursor_api: CursorAPI, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    pages = Cursor(field="next_cursor", param="cursor")
    await streampage.stream(cursor_api.url, pages=pages).records("data").into(SQLite(db))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT checkpoint FROM streampage_checkpoints").fetchall()
    assert rows and all(PASSWORD not in r[0] and API_KEY not in r[0] for r in rows)
    assert PASSWORD.encode() not in every_byte(tmp_path)
    assert API_KEY.encode() not in every_byte(tmp_path)


# ---------------------------------------------------------------------- fingerprints


async def test_a_resume_with_another_url_is_refused_naming_it(page_server, tmp_path) -> None:
    server = await page_server(pages=3)
    out = tmp_path / "o.jsonl"
    sink = Flaky(JSONLines(out), fail_at=2)
    with pytest.raises(streampage.SinkError):
        await streampage.stream(server.url, pages=PageNumber()).records("items").into(sink, batch=1)

    other = server.url.replace("/items", "/users")
    with pytest.raises(streampage.ConfigurationError) as caught:
        await (
            streampage.stream(other, pages=PageNumber())
            .records("items")
            .into(JSONLines(out), mode="resume")
        )
    message = str(caught.value)
    assert "another source" in message and "/items" in message and "/users" in message
    assert "replace" in message


async def test_a_resume_with_another_records_path_is_refused(page_server, tmp_path) -> None:
    server = await page_server(pages=3)
    out = tmp_path / "o.jsonl"
    await streampage.stream(server.url, pages=PageNumber()).records("items").into(JSONLines(out))
    with pytest.raises(streampage.ConfigurationError, match="records was 'items', now 'data'"):
        await (
            streampage.stream(server.url, pages=PageNumber())
            .records("data")
            .into(JSONLines(out), mode="resume")
        )


async def test_a_rotated_api_key_is_the_same_source(page_server, tmp_path) -> None:
    server = await page_server(pages=3)
    out = tmp_path / "o.jsonl"
    first = f"{server.url}?api_key=old-key-1234"
    await streampage.stream(first, pages=PageNumber()).records("items").into(JSONLines(out))
    stats = await (
        streampage.stream(f"{server.url}?api_key=new-key-5678", pages=PageNumber())
        .records("items")
        .into(JSONLines(out), mode="resume")
    )
    assert stats.resumed_finished and stats.records == 0  # the same pages, not fetched again
    assert jsonl_ids(out) == list(range(1, 10))
    assert b"old-key-1234" not in every_byte(tmp_path)


# ---------------------------------------------------------------------- finished runs


async def test_a_resume_of_a_finished_run_fetches_only_whats_new(page_server, tmp_path) -> None:
    server = await page_server(pages=4, extra=lambda n: {"total_pages": server.pages})
    out = tmp_path / "o.jsonl"

    def run() -> streampage.Records:
        return streampage.stream(server.url, pages=PageNumber(total_pages="total_pages")).records(
            "items"
        )

    await run().into(JSONLines(out))
    server.requests.clear()

    again = await run().into(JSONLines(out), mode="resume")
    assert again.resumed_finished and again.records == 0
    # page 1 for the total, the last page again (records added to it), and nothing more
    assert sorted(server.requests) == [1, 4]

    server.pages = 5  # the API grew by a page
    server.requests.clear()
    grown = await run().into(JSONLines(out), mode="resume")
    assert grown.records == 3 and sorted(server.requests) == [1, 4, 5]
    assert jsonl_ids(out) == list(range(1, 16))


class GrowingAPI:
    """``total`` records, ``per_page`` a page, ``{"items", "total"}``; the total can grow."""

    def __init__(self, total: int, per_page: int = 10) -> None:
        self.total, self.per_page = total, per_page
        self.total_on_every_page: bool | None = True  # False: page 1 alone; None: never
        self.newest_first = False  # records in reverse order of their ids
        self.slow: dict[int, float] = {}  # page -> seconds before it answers
        self.url = ""

    def records(self) -> streampage.Records:
        """Its records, as the tests here fetch them: ten a page, the total named."""
        pages = PageNumber(size=10, size_param=None, total_items="total")
        return streampage.stream(self.url, pages=pages).records("items")

    async def handle(self, request: web.Request) -> web.Response:
        n = int(request.query.get("page", "1"))
        await asyncio.sleep(self.slow.get(n, 0.0))
        ids = list(range(1, self.total + 1))
        if self.newest_first:
            ids.reverse()
        chosen = ids[(n - 1) * self.per_page : n * self.per_page]
        body: dict[str, Any] = {"items": [item(i) for i in chosen]}
        if self.total_on_every_page is not None and (n == 1 or self.total_on_every_page):
            body["total"] = self.total
        return web.json_response(body)


@pytest.fixture
async def growing_api() -> AsyncIterator[GrowingAPI]:
    api = GrowingAPI(95)
    app = web.Application()
    app.router.add_get("/items", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    yield api
    await runner.cleanup()


@pytest.mark.parametrize("grown", [100, 125])
async def test_records_added_to_a_short_last_page_are_found_on_resume(
    growing_api: GrowingAPI, tmp_path: Path, grown: int
) -> None:
    # 95 records, 10 a page: page 10 holds 5. Grown to 100, page 10 fills up and no page
    # is new; grown to 125, pages 11 to 13 come too. Either way every record, once.
    out = tmp_path / "o.jsonl"

    await growing_api.records().into(JSONLines(out))
    growing_api.total = grown
    stats = await growing_api.records().into(JSONLines(out), mode="resume")

    assert stats.records == grown - 95
    assert jsonl_ids(out) == list(range(1, grown + 1))
    again = await growing_api.records().into(JSONLines(out), mode="resume")
    assert again.records == 0 and jsonl_ids(out) == list(range(1, grown + 1))


async def test_a_finished_runs_last_page_stays_reopened_until_it_is_committed_again(
    growing_api: GrowingAPI, tmp_path: Path
) -> None:
    # The resume of a finished run fails after pages 11 and 12 are committed and before
    # page 10 (its last page, reopened for the records added to it) comes back: the next
    # resume must still write only page 10's new records.
    out = tmp_path / "o.jsonl"

    await growing_api.records().into(JSONLines(out))
    growing_api.total, growing_api.slow = 125, {10: 0.5}
    with pytest.raises(streampage.SinkError):
        await growing_api.records().into(Flaky(JSONLines(out), fail_at=3), batch=1, mode="resume")
    growing_api.slow = {}
    await growing_api.records().into(JSONLines(out), mode="resume")
    assert jsonl_ids(out) == list(range(1, 126))


async def test_a_last_page_that_no_longer_starts_with_what_was_written_is_an_error(
    growing_api: GrowingAPI, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"

    await growing_api.records().into(JSONLines(out))
    growing_api.total, growing_api.newest_first = 100, True  # page 10 now holds ids 10..1
    with pytest.raises(streampage.PaginationError, match="no longer starts with"):
        await growing_api.records().into(JSONLines(out), mode="resume")
    assert jsonl_ids(out) == list(range(1, 96))  # nothing written twice


async def test_a_filter_named_like_a_word_in_a_secret_is_part_of_the_source(
    page_server, tmp_path
) -> None:
    server = await page_server(pages=2)
    out = tmp_path / "o.jsonl"
    await (
        streampage.stream(f"{server.url}?author=alice", pages=PageNumber())
        .records("items")
        .into(JSONLines(out))
    )
    with pytest.raises(streampage.ConfigurationError, match="author=alice"):
        await (
            streampage.stream(f"{server.url}?author=bob", pages=PageNumber())
            .records("items")
            .into(JSONLines(out), mode="resume")
        )
    keywords = [f"{server.url}?keyword=python", f"{server.url}?keyword=rust"]
    stats = await (
        streampage.stream(keywords, pages=PageNumber())
        .records("items")
        .into(JSONLines(tmp_path / "k.jsonl"))
    )
    assert stats.records == 12


async def test_a_resumed_run_is_checked_against_the_total_of_a_page_it_does_not_deliver(
    growing_api: GrowingAPI, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    growing_api.total_on_every_page = False

    def run() -> streampage.Stream[Any]:
        return streampage.stream(
            growing_api.url, pages=PageNumber(size=10, size_param=None, total_items="total")
        )

    await run().records("items").into(JSONLines(out))
    s = run()
    await s.records("items").into(JSONLines(out), mode="resume")
    # page 1 is committed and not delivered again; its total still checks the whole run
    assert s.completeness.status == "verified", s.completeness.notes


async def test_an_interrupted_run_is_not_finished(page_server, tmp_path) -> None:
    server = await page_server(pages=4)
    out = tmp_path / "o.jsonl"
    with pytest.raises(streampage.SinkError):
        await (
            streampage.stream(server.url, pages=PageNumber())
            .records("items")
            .into(Flaky(JSONLines(out), fail_at=3), batch=1)
        )
    stats = await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(JSONLines(out), mode="resume")
    )
    assert stats.resumed_pages == 2 and not stats.resumed_finished
    assert jsonl_ids(out) == list(range(1, 13))


async def test_the_cli_says_a_finished_run_is_complete_already(page_server, tmp_path) -> None:
    server = await page_server(pages=3)
    out = tmp_path / "items.jsonl"
    first = await cli_fetch(server.url, "--pages", "page", "--records", "items", "-o", str(out))
    assert first.code == 0, first
    again = await cli_fetch(
        server.url, "--pages", "page", "--records", "items", "-o", str(out), "--resume"
    )
    assert again.code == 0, again
    assert "complete already" in again.err and "nothing is new" in again.err
    assert jsonl_ids(out) == list(range(1, 10))


async def test_the_cli_refuses_resume_with_replace_and_format_on_a_file(tmp_path) -> None:
    both = await cli_fetch(
        "http://127.0.0.1:9/x", "-o", str(tmp_path / "a.jsonl"), "--resume", "--replace"
    )
    assert both.code == 2 and "not allowed with argument" in both.err
    form = await cli_fetch(
        "http://127.0.0.1:9/x", "-o", str(tmp_path / "a.jsonl"), "--format", "jsonl"
    )
    assert form.code == 2 and "--format applies to a folder target" in form.err


def test_a_version_1_checkpoint_still_reads() -> None:
    old = msgspec.json.encode({"url:abc": {"pages": [[1, 3]], "records": 9}})
    checkpoint = Checkpoint.from_json(old)
    assert len(checkpoint) == 3 and checkpoint.fingerprint is None and not checkpoint.finished


async def test_sources_that_differ_in_their_credentials_alone_need_keys(page_server, tmp_path):
    server = await page_server(pages=2)
    tenants = [f"{server.url}?api_key=tenant-a-key", f"{server.url}?api_key=tenant-b-key"]
    with pytest.raises(streampage.ConfigurationError, match="credentials alone"):
        await (
            streampage.stream(tenants, pages=PageNumber())
            .records("items")
            .into(JSONLines(tmp_path / "o.jsonl"))
        )
    keyed = [streampage.Source(u, key=f"t{i}") for i, u in enumerate(tenants)]
    stats = await (
        streampage.stream(keyed, pages=PageNumber())
        .records("items")
        .into(JSONLines(tmp_path / "k.jsonl"))
    )
    assert stats.records == 12


async def test_parameter_order_and_a_pinned_auto_choice_are_the_same_source(page_server, tmp_path):
    server = await page_server(pages=3)
    out = tmp_path / "o.jsonl"
    await (
        streampage.stream(server.url, params={"a": "1", "b": "2"})  # pages=auto
        .records("items")
        .into(JSONLines(out))
    )
    stats = await (
        streampage.stream(server.url, params={"b": "2", "a": "1"}, pages=PageNumber())
        .records("items")
        .into(JSONLines(out), mode="resume")
    )
    assert stats.resumed_finished and stats.records == 0


async def test_a_version_1_checkpoint_resumes_without_duplicates_or_its_secrets(
    page_server, tmp_path
) -> None:
    # written by version 1: a source named by its URL with the key, pages 1-2 committed
    server = await page_server(pages=4)
    url = f"{server.url}?api_key={API_KEY}"
    db = tmp_path / "x.db"
    legacy = streampage._checkpoint.legacy_source_id(streampage.Source(url))
    v1 = {legacy: {"pages": [[1, 2]], "records": 6, "walk_url": f"{url}&page=2", "walk_number": 2}}
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, data TEXT)")
        conn.execute("CREATE TABLE streampage_checkpoints (name TEXT PRIMARY KEY, checkpoint TEXT)")
        conn.executemany(
            "INSERT INTO items (data) VALUES (?)", [(json.dumps(item(i)),) for i in range(1, 7)]
        )
        conn.execute(
            "INSERT INTO streampage_checkpoints VALUES ('items/default', ?)", (json.dumps(v1),)
        )

    stats = await (
        streampage.stream(url, pages=PageNumber()).records("items").into(SQLite(db), mode="resume")
    )

    assert stats.resumed_pages == 2 and stats.records == 6
    with sqlite3.connect(db) as conn:
        ids = sorted(json.loads(r[0])["id"] for r in conn.execute("SELECT data FROM items"))
        (state,) = conn.execute("SELECT checkpoint FROM streampage_checkpoints").fetchone()
    assert ids == list(range(1, 13))
    assert API_KEY not in state


def test_auto_resumed_must_choose_the_numbering_the_earlier_run_used() -> None:
    stored = {"url": "u", "pages": "Offset(param='offset', limit=10)", "records": "items"}
    assert chosen_differs(stored, "PageNumber(param='page', size=None)") is not None
    assert chosen_differs(stored, "Offset(param='offset', limit=10)") is None
    auto = {**stored, "pages": "Auto()", "chose": "PageNumber(param='page', size=None)"}
    assert chosen_differs(auto, "PageNumber(param='page', size=None)") is None
    assert chosen_differs(auto, "Cursor(param='cursor')") is not None


async def test_what_auto_chose_is_kept_and_checked_on_resume(page_server, tmp_path) -> None:
    server = await page_server(pages=6)  # echoes its page number: auto picks PageNumber
    out = tmp_path / "o.jsonl"
    with pytest.raises(streampage.SinkError):  # pages=auto, cut short after a commit
        await (
            streampage.stream(server.url)
            .records("items")
            .into(Flaky(JSONLines(out), fail_at=2), batch=1)
        )
    offsets = streampage.Offset(limit=3)
    with pytest.raises(streampage.ConfigurationError, match=r"paginator was .PageNumber"):
        await (
            streampage.stream(server.url, pages=offsets)
            .records("items")
            .into(JSONLines(out), mode="resume")
        )
    # pinning what Auto chose, in its own spelling, is the same source
    stats = await (
        streampage.stream(server.url, pages=PageNumber())
        .records("items")
        .into(JSONLines(out), mode="resume")
    )
    assert stats.resumed_pages >= 1 and jsonl_ids(out) == list(range(1, 19))


class SpringAPI:
    """Spring Data's page: ``?page=`` from 0, ``{"content", "number", "totalPages"}``."""

    def __init__(self, pages: int = 5, per_page: int = 3) -> None:
        self.pages, self.per_page = pages, per_page
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        n = int(request.query.get("page", "0"))
        first = n * self.per_page + 1
        ids = range(first, first + self.per_page) if n < self.pages else range(0)
        return web.json_response(
            {"content": [item(i) for i in ids], "number": n, "totalPages": self.pages}
        )


@pytest.fixture
async def spring_api() -> AsyncIterator[SpringAPI]:
    api = SpringAPI()
    app = web.Application()
    app.router.add_get("/items", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
    yield api
    await runner.cleanup()


async def test_a_zero_based_choice_of_auto_is_not_an_explicit_start_0(
    spring_api: SpringAPI, tmp_path: Path
) -> None:
    # Auto numbers pages from 1 and sends page=n-1; PageNumber(start=0) numbers them from
    # 0 and sends page=n: the same page numbers name other pages
    out = tmp_path / "o.jsonl"
    with pytest.raises(streampage.SinkError):
        await (
            streampage.stream(spring_api.url)
            .records("content")
            .into(Flaky(JSONLines(out), fail_at=2), batch=1)
        )
    explicit = PageNumber(start=0, size_param=None, total_pages="totalPages")
    with pytest.raises(streampage.ConfigurationError, match="another source"):
        await (
            streampage.stream(spring_api.url, pages=explicit)
            .records("content")
            .into(JSONLines(out), mode="resume")
        )
    stats = (
        await streampage.stream(spring_api.url)
        .records("content")
        .into(JSONLines(out), mode="resume")
    )
    assert stats.resumed_pages >= 1 and jsonl_ids(out) == list(range(1, 16))


async def test_an_offset_resumed_from_another_start_is_another_source(tmp_path) -> None:
    # the numbering alone decides: an Offset from 0 and one from 10 name other pages by
    # the same numbers (checked before any request)
    out = tmp_path / "o.jsonl"
    earlier = Checkpoint(fingerprint={"url": "u", "pages": "", "records": "items"})
    from streampage._fingerprint import differences, numbering

    was = {"url": "u", "pages": numbering(streampage.Offset(limit=3, start=0)), "records": "i"}
    now = {**was, "pages": numbering(streampage.Offset(limit=3, start=10))}
    assert differences(was, now) and "start=10" in differences(was, now)[0]
    assert not differences(was, {**was})
    del earlier, out


async def test_auto_that_sees_one_page_cannot_resume_a_named_paginators_run(
    growing_api: GrowingAPI, tmp_path: Path
) -> None:
    # {"items"} alone: Auto calls page 1 the only page, while the earlier run numbered
    # ten pages by ?page= (and no total could tell the resume it fell short)
    out = tmp_path / "o.jsonl"
    growing_api.total_on_every_page = None
    pages = PageNumber()
    with pytest.raises(streampage.SinkError):
        await (
            streampage.stream(growing_api.url, pages=pages)
            .records("items")
            .into(Flaky(JSONLines(out), fail_at=3), batch=1)
        )
    with pytest.raises(streampage.ConfigurationError, match="another source"):
        await (
            streampage.stream(growing_api.url).records("items").into(JSONLines(out), mode="resume")
        )
    assert jsonl_ids(out) == list(range(1, 21))  # nothing more was written


def test_many_sources_cannot_switch_between_auto_and_a_named_paginator() -> None:
    from streampage._fingerprint import auto_unchecked

    auto = {"url": "many sources", "pages": "Auto()", "records": "items"}
    named = {**auto, "pages": "PageNumber(param='page', size=None, value=n+0)"}
    assert auto_unchecked(auto, named, many=True) is not None
    assert auto_unchecked(named, auto, many=True) is not None
    assert auto_unchecked(auto, auto, many=True) is None
    assert auto_unchecked(auto, named, many=False) is None  # one source: Auto's choice kept


def test_a_run_where_auto_saw_one_page_resumes_under_any_choice_of_auto() -> None:
    stored = {"url": "u", "pages": "Auto()", "chose": "one page", "records": "items"}
    assert chosen_differs(stored, "PageNumber(param='page', size=None, value=n+0)") is None


async def test_a_resume_whose_first_page_fails_reports_the_failure(page_server, tmp_path):
    server = await page_server(pages=4)
    out = tmp_path / "o.jsonl"
    with pytest.raises(streampage.SinkError):
        await (
            streampage.stream(server.url)
            .records("items")
            .into(Flaky(JSONLines(out), fail_at=2), batch=1)
        )
    server.fail[1] = 503
    s = streampage.stream(server.url, on_error="skip", retry=streampage.RetryPolicy(attempts=1))
    await s.records("items").into(JSONLines(out), mode="resume")
    assert [f.page for f in s.failures] == [1]  # the failure, not "another source"

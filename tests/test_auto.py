"""pages=auto, the default: the paginator is picked from the first response, and logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import collect

import streampage

Handler = Callable[[web.Request, int], web.Response]


@pytest.fixture
async def api() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, list[str]]]]]:
    """A server whose answer to each request is ``handler(request, page)``, where page is
    read from ``page``/``cursor``/``from`` (default 1); it records every query string."""
    runners: list[web.AppRunner] = []

    async def make(handler: Handler) -> tuple[str, list[str]]:
        seen: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            seen.append(request.query_string)
            q = request.query
            page = int(q.get("page") or q.get("cursor") or q.get("pageToken") or q.get("from") or 1)
            return handler(request, page)

        app = web.Application()
        app.router.add_get("/items", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/items", seen

    yield make
    for runner in runners:
        await runner.cleanup()


def records(pages: list[streampage.Page[Any]]) -> list[int]:
    out: list[int] = []
    for page in pages:
        data = page.data
        out.extend(data if isinstance(data, list) else data["items"])
    return sorted(out)


LAST = 4


def items(page: int) -> list[int]:
    return [page * 10 + i for i in range(3)] if 1 <= page <= LAST else []


ALL = sorted(i for p in range(1, LAST + 1) for i in items(p))


async def choose(api: Any, handler: Handler, caplog: pytest.LogCaptureFixture) -> Any:
    url, seen = await api(handler)
    with caplog.at_level(logging.INFO, logger="streampage"):
        pages = await collect(streampage.stream(url, concurrency=4))
    return pages, seen, caplog.text


async def test_a_link_header_is_followed(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        headers = {"Link": f'<?page={page + 1}>; rel="next"'} if page < LAST else {}
        return web.json_response(items(page), headers=headers)

    pages, _seen, log = await choose(api, handler, caplog)

    assert records(pages) == ALL
    assert "chose LinkHeader" in log


async def test_a_next_url_in_the_body_is_followed(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        nxt = f"/items?from={page + 1}" if page < LAST else None
        return web.json_response({"items": items(page), "links": {"next": nxt}})

    pages, _seen, log = await choose(api, handler, caplog)

    assert records(pages) == ALL
    assert "NextURL(field='links.next'" in log


async def test_a_cursor_in_the_body_is_sent_back(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        token = str(page + 1) if page < LAST else ""
        return web.json_response({"items": items(page), "nextPageToken": token})

    pages, seen, log = await choose(api, handler, caplog)

    assert records(pages) == ALL
    assert "Cursor(field='nextPageToken', param='pageToken'" in log
    assert seen[1:] == ["pageToken=2", "pageToken=3", "pageToken=4"]


async def test_a_page_count_fans_out_page_numbers(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        return web.json_response({"items": items(page), "total_pages": LAST})

    pages, seen, log = await choose(api, handler, caplog)

    assert records(pages) == ALL
    assert "PageNumber(" in log and "total_pages='total_pages'" in log
    assert len(seen) == LAST  # nothing fetched past the total


async def test_a_list_body_pages_until_empty(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        return web.json_response(items(page))

    pages, _seen, log = await choose(api, handler, caplog)

    assert records(pages) == ALL
    assert "chose PageNumber(" in log


async def test_no_sign_of_pagination_means_one_page(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        return web.json_response({"name": "a single object", "items": items(1)})

    pages, seen, log = await choose(api, handler, caplog)

    assert [p.number for p in pages] == [1]
    assert len(seen) == 1
    assert "only page" in log


async def test_a_server_that_ignores_the_page_parameter_gives_one_page(api, caplog):
    # a list body invites page numbers, but every page is the same: no duplicates delivered
    def handler(request: web.Request, page: int) -> web.Response:
        return web.json_response(items(1))

    pages, _seen, log = await choose(api, handler, caplog)

    assert records(pages) == items(1)
    assert "ignores the page parameter" in log


async def test_a_response_that_points_two_ways_asks_to_name_one(api, caplog):
    def handler(request: web.Request, page: int) -> web.Response:
        body = {"items": items(page), "next": "/items?from=2", "next_cursor": "abc"}
        return web.json_response(body)

    url, _seen = await api(handler)
    delivered: list[int] = []
    with pytest.raises(streampage.PaginationError, match="Name one with pages="):
        async with streampage.stream(url) as s:
            async for page in s:
                delivered.append(page.number)
    assert delivered == [1]  # the first page itself was fine, and is not lost


@pytest.mark.parametrize("query", ["", "?page=0&size=3"], ids=["bare-url", "page-0-in-url"])
async def test_a_zero_based_page_count_starts_at_page_0(api, caplog, query):
    # Spring Data: ?page=0 is the first page, echoed as "number"; totalPages and
    # totalElements say how far it goes. Pages are still numbered from 1 for the caller.
    def handler(request: web.Request, page: int) -> web.Response:
        index = int(request.query.get("page", "0"))
        body = {
            "content": items(index + 1),
            "number": index,
            "size": 3,
            "totalPages": LAST,
            "totalElements": LAST * 3,
        }
        return web.json_response(body)

    url, seen = await api(handler)
    with caplog.at_level(logging.INFO, logger="streampage"):
        s = streampage.stream(url + query, concurrency=4)
        pages = await collect(s)

    assert sorted(i for p in pages for i in p.data["content"]) == ALL
    assert [p.number for p in pages] == list(range(1, LAST + 1))
    assert "PageNumber(start=0" in caplog.text
    assert s.completeness.status == "verified"
    assert len(seen) == LAST  # page=0..3, nothing past the end


def test_auto_is_the_default() -> None:
    s = streampage.stream("http://127.0.0.1:1/items")
    assert isinstance(s._sources._pages, streampage.Auto)

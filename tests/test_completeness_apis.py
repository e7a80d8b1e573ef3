"""Completeness on the shapes of well-known APIs: no false alarm on an API that behaves as
documented, and no quiet shortfall on one that a guess gets wrong.

Each test serves one API's documented contract from an in-process aiohttp.web server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import collect

import streampage

Handler = Callable[[web.Request], web.Response]


@pytest.fixture
async def api() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve ``handler`` for every path; returns the base URL (no trailing slash)."""
    runners: list[web.AppRunner] = []

    async def make(handler: Handler) -> str:
        async def handle(request: web.Request) -> web.Response:
            return handler(request)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield make
    for runner in runners:
        await runner.cleanup()


def ids(pages: list[streampage.Page[Any]], records: Callable[[Any], list[Any]]) -> list[int]:
    return sorted(r["id"] for p in pages for r in records(p.data))


async def test_google_omits_next_page_token_on_a_one_page_result(api):
    # nextPageToken is left out on the last page: on a one-page collection the named field
    # is absent from the first page, and that is the end, not a wrong name
    def handler(request: web.Request) -> web.Response:
        return web.json_response({"kind": "list", "items": [{"id": 1}, {"id": 2}]})

    url = await api(handler)
    s = streampage.stream(url + "/v1/things", pages=streampage.Cursor(field="nextPageToken"))
    pages = await collect(s)

    assert ids(pages, lambda d: d["items"]) == [1, 2]
    assert s.completeness.status == "not verifiable"


async def test_a_named_cursor_field_absent_beside_another_pagination_is_an_error(api):
    # the same absence, on a page that plainly pages another way: a wrong name
    def handler(request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": 1}], "next_cursor": "abc"})

    url = await api(handler)
    with pytest.raises(streampage.ConfigurationError, match="next_cursor"):
        await collect(streampage.stream(url + "/x", pages=streampage.Cursor(field="nextToken")))


async def test_github_link_pagination_resumed_is_verified_against_rel_last(api, tmp_path):
    # rel="last" read on a resumed run's first delivered page (page 4) counts from page 1
    last, per = 10, 5

    def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        base = str(request.url.with_query(None))
        links = [f'<{base}?page={page + 1}>; rel="next"'] if page < last else []
        links.append(f'<{base}?page={last}>; rel="last"')
        body = [{"id": i} for i in range((page - 1) * per + 1, page * per + 1)]
        return web.json_response(body, headers={"Link": ", ".join(links)})

    url = await api(handler)
    sink = streampage.sinks.JSONLines(tmp_path / "out.jsonl")
    first = streampage.stream(url + "/repos", pages=streampage.LinkHeader(), max_pages=3)
    await first.records(lambda d: d).into(sink, batch=per)

    again = streampage.stream(url + "/repos", pages=streampage.LinkHeader())
    await again.records(lambda d: d).into(
        streampage.sinks.JSONLines(tmp_path / "out.jsonl"), batch=per, resume=True
    )

    assert again.completeness.status == "verified", again.completeness.notes
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == last * per


async def test_spring_data_zero_based_pages_are_checked_not_taken_for_bounded(api):
    # PageNumber(start=0) is Spring Data's documented first page, not a start past it: the
    # totals are still held against the run (here the server is 5 records short)
    def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "0"))
        content = [{"id": i} for i in range(page * 20 + 1, min(page * 20 + 20, 95) + 1)]
        body = {"content": content, "number": page, "totalPages": 5, "totalElements": 100}
        return web.json_response(body)

    url = await api(handler)
    pager = streampage.PageNumber(start=0, total_pages="totalPages", size_param=None)
    with pytest.raises(streampage.IncompleteError) as caught:
        await collect(streampage.stream(url + "/items", pages=pager))

    assert (caught.value.expected, caught.value.delivered) == (100, 95)


async def test_elasticsearch_lower_bound_total_is_no_total(api):
    # track_total_hits stops counting at 100 and says "gte": not a count to hold the run to;
    # pages=auto still reads from/size from the URL and pages until the hits run out
    total = 250

    def handler(request: web.Request) -> web.Response:
        start, size = int(request.query.get("from", "0")), int(request.query.get("size", "10"))
        hits = [{"_id": str(i), "id": i} for i in range(start + 1, min(start + size, total) + 1)]
        body = {"hits": {"total": {"value": 100, "relation": "gte"}, "hits": hits}}
        return web.json_response(body)

    url = await api(handler)
    s = streampage.stream(url + "/idx/_search?from=0&size=50")
    pages = await collect(s)

    assert ids(pages, lambda d: d["hits"]["hits"]) == list(range(1, total + 1))
    assert s.completeness.status == "not verifiable"


async def test_auto_from_a_page_in_the_middle_is_a_bounded_run(api):
    # DRF, starting at ?page=3 of 10: pages 3..10 and nothing past them; the count (all
    # 100 records) cannot be held against a run that started late on purpose
    def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        if page > 10:
            return web.json_response({"detail": "Invalid page."}, status=404)
        nxt = str(request.url.update_query(page=page + 1)) if page < 10 else None
        results = [{"id": i} for i in range((page - 1) * 10 + 1, page * 10 + 1)]
        return web.json_response({"count": 100, "next": nxt, "results": results})

    url = await api(handler)
    s = streampage.stream(url + "/items?page=3")
    pages = await collect(s)

    assert ids(pages, lambda d: d["results"]) == list(range(21, 101))
    assert s.completeness.status == "not verifiable"


async def test_stripe_has_more_with_a_wrong_guess_is_an_error_not_one_page(api):
    # Stripe pages by starting_after=<last id>, which no guess finds; page 2 is page 1
    # again, and the first page said has_more: true, so one page is not "complete"
    def handler(request: web.Request) -> web.Response:
        data = [{"id": i} for i in range(1, 11)]
        return web.json_response({"object": "list", "data": data, "has_more": True})

    url = await api(handler)
    with pytest.raises(streampage.PaginationError, match="'page'"):
        await collect(streampage.stream(url + "/v1/customers?limit=10"))


async def test_empty_pages_of_a_continuation_api_are_not_repeats(api):
    # Azure Table storage may answer pages with no rows and a continuation header
    pages_ = [[1, 2], [], [], [3, 4], [5]]

    def handler(request: web.Request) -> web.Response:
        k = int(request.query.get("ct", "0"))
        more = {"x-ms-continuation": str(k + 1)} if k + 1 < len(pages_) else {}
        return web.json_response({"value": [{"id": i} for i in pages_[k]]}, headers=more)

    url = await api(handler)
    cursor = streampage.Cursor(
        field=lambda p: p.response.headers.get("x-ms-continuation"), param="ct"
    )
    pages = await collect(streampage.stream(url + "/tables", pages=cursor))

    assert ids(pages, lambda d: d["value"]) == [1, 2, 3, 4, 5]


async def test_zendesk_next_page_url_with_a_count_fans_out_and_is_verified(api):
    def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        nxt = str(request.url.update_query(page=page + 1)) if page < 3 else None
        rows = [{"id": i} for i in range((page - 1) * 100 + 1, min(page * 100, 250) + 1)]
        return web.json_response({"tickets": rows, "next_page": nxt, "count": 250})

    url = await api(handler)
    s = streampage.stream(url + "/api/v2/tickets.json")
    pages = await collect(s)

    assert ids(pages, lambda d: d["tickets"]) == list(range(1, 251))
    assert s.completeness.status == "verified"


async def test_json_server_1_one_page_collection_ends_where_its_body_says(api):
    # PageNumber without a total on json-server 1.x: page 2 is page 1 again (clamped), and
    # the body's own "pages": 1 says that is the end, not an ignored parameter
    def handler(request: web.Request) -> web.Response:
        data = [{"id": str(i)} for i in range(1, 9)]
        body = {"first": 1, "prev": None, "next": None, "last": 1, "pages": 1, "items": 8}
        return web.json_response({**body, "data": data})

    url = await api(handler)
    s = streampage.stream(url + "/posts", pages=streampage.PageNumber(param="_page"))
    pages = await collect(s)

    assert [p.number for p in pages] == [1]
    assert s.completeness.status == "verified"


async def test_a_server_that_filters_full_pages_is_paged_to_the_end(api):
    # Atlassian: "fewer results than the limit may be returned" (permissions); the body
    # echoes the limit it used, so a short page is not the last one
    def handler(request: web.Request) -> web.Response:
        start, limit = int(request.query.get("offset", "0")), int(request.query["limit"])
        rows = [{"id": i} for i in range(start + 1, min(start + limit, 60) + 1) if i % 7]
        return web.json_response({"results": rows, "limit": limit, "size": len(rows)})

    url = await api(handler)
    pages = await collect(streampage.stream(url + "/content", pages=streampage.Offset(limit=10)))

    assert ids(pages, lambda d: d["results"]) == [i for i in range(1, 61) if i % 7]


async def test_a_fan_out_over_an_ignored_parameter_delivers_no_copy(api):
    # every page is page 1 and the total says 50: the first copy is caught on arrival,
    # whichever page it is, and nothing past page 1 is delivered, even under skip
    def handler(request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": 1}, {"id": 2}], "total_pages": 50})

    url = await api(handler)
    pager = streampage.PageNumber(param="pg", total_pages="total_pages")
    s = streampage.stream(url + "/x", pages=pager, concurrency=16, on_error="skip")
    pages = await collect(s)

    assert [p.number for p in pages] == [1]
    assert [type(f.error) for f in s.failures] == [streampage.PaginationError]
    assert "'pg'" in str(s.failures[0].error)

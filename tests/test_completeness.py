"""Completeness: a wrong or guessed pagination never ends "complete".

The first tests are the issue's table: runs that used to end normally while records were
missing or duplicated. Each now gets every record exactly once, or fails with an error that
says what went wrong. The rest pin down the rules behind them: evidence of how much data
there is (a total, a count, a page count, X-Total-Count, Link rel="last") is checked at the
end of the run, with some drift allowed; Auto recognises the common frameworks, reuses the
URL's own parameters and confirms a guess before it fans out; an explicit paginator checks
its assumptions (a page equal to the one before, a named field that is not there, a server
that serves fewer records than asked); ``stats.requests`` counts what was sent. The servers
imitate real frameworks (frameworks.py); the last tests check the imitations themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from conftest import cli_fetch
from frameworks import (
    API,
    CapsPageSize,
    Contract,
    ContractAPI,
    CursorIgnoresPage,
    DRFCursor,
    DRFLimitOffset,
    DRFPageNumber,
    FastAPICursor,
    FastAPILimitOffset,
    FastAPIPage,
    IgnoresPage,
    JSONServer017,
    JSONServer1,
    LaravelPaginator,
    NamedCursor,
    OffsetEcho,
    record_ids,
)

import streampage
from streampage import Cursor, LinkHeader, NextURL, Offset, PageNumber
from streampage.demo import STYLES, serve

#: Upper bound for one run: a run that never ends is a failure, not a stuck suite.
WITHIN = 10.0


@dataclass
class Run:
    """What a stream did: the pages it delivered, and the error that ended it (if any)."""

    stream: streampage.Stream[Any]
    pages: list[streampage.Page[Any]] = field(default_factory=list)
    error: streampage.StreamPageError | None = None

    @property
    def ids(self) -> list[int]:
        return [i for page in self.pages for i in record_ids(page.data)]

    @property
    def duplicates(self) -> list[int]:
        return sorted(i for i, n in Counter(self.ids).items() if n > 1)


async def run(url: str, **options: Any) -> Run:
    """Stream every page of ``url``; a StreamPageError ends the run and is kept, not raised."""
    result = Run(streampage.stream(url, **options))
    try:
        async with asyncio.timeout(WITHIN), result.stream as s:
            async for page in s:
                result.pages.append(page)
    except streampage.StreamPageError as exc:
        result.error = exc
    except TimeoutError:
        pytest.fail(f"the run did not end within {WITHIN} s ({len(result.pages)} pages so far)")
    return result


def assert_every_record_once(result: Run, expected: list[int]) -> None:
    assert result.error is None, f"the run failed: {result.error!r}"
    assert result.duplicates == [], f"records delivered twice: {result.duplicates[:20]}"
    got = sorted(result.ids)
    missing = sorted(set(expected) - set(got))
    assert got == expected, f"{len(got)} of {len(expected)} records; missing {missing[:20]}"


def assert_fails(result: Run, *types: type[BaseException]) -> BaseException:
    """The run ended with one of ``types``, without delivering a record twice first."""
    assert result.error is not None, (
        f"the run ended normally with {len(set(result.ids))} distinct records "
        f"({len(result.ids)} delivered); expected {' or '.join(t.__name__ for t in types)}"
    )
    assert isinstance(result.error, types), f"unexpected error: {result.error!r}"
    assert result.duplicates == [], f"records delivered twice: {result.duplicates[:20]}"
    return result.error


def mentions(text: object, number: int) -> bool:
    """Does ``text`` give ``number``, written plainly or with thousands separators?"""
    return str(number) in str(text) or f"{number:,}" in str(text)


def queries(api: API) -> list[dict[str, list[str]]]:
    return [parse_qs(q, keep_blank_values=True) for q in api.queries]


# ---------------------------------------------------------------------- the table


async def test_auto_pages_an_offset_body_that_carries_a_total() -> None:
    """``{"offset": 0, "limit": 25, "total": N, "items": [...]}`` (the demo's offset style)
    used to be "no sign of pagination": 25 records of N, exit 0."""
    runner, url = await serve(items=1000, latency=0, per_page=25, style="offset")
    try:
        result = await run(url)
    finally:
        await runner.cleanup()

    assert_every_record_once(result, list(range(1, 1001)))


async def test_auto_pages_fastapi_pagination_limit_offset_page() -> None:
    """fastapi-pagination's LimitOffsetPage echoes limit/offset and carries the total; it
    used to end after one page."""
    async with FastAPILimitOffset(records=730) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)


@pytest.mark.parametrize("quoted", [True, False], ids=["percent-quoted", "raw-base64"])
async def test_auto_follows_fastapi_pagination_cursor_page(quoted: bool) -> None:
    """CursorPage's next cursor is in ``next_page`` and goes back as ``?cursor=``; it used to
    end after one page. Its cursors are base64 (with ``=``), percent-quoted by default."""
    async with FastAPICursor(records=420, quoted=quoted) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)
    assert all("cursor" in q for q in queries(api)[1:])


async def test_auto_reuses_the_page_parameter_already_in_the_url() -> None:
    """json-server 1.x, ``?_page=1&_per_page=100``: Auto used to add ``page=N`` too, which
    json-server takes as a filter on a field ``page``: 99 empty pages."""
    async with JSONServer1(records=1000) as api:
        result = await run(api.url + "?_page=1&_per_page=100")

    assert_every_record_once(result, api.ids)
    for query in queries(api):
        assert set(query) <= {"_page", "_per_page"}, f"a parameter of its own: {query}"
        assert query["_per_page"] == ["100"]


async def test_auto_on_a_server_that_ignores_the_page_parameter_while_a_total_says_more() -> None:
    """Page 2 is page 1 again and X-Total-Count says 1000: the guess failed its confirmation
    while a total says there is more, which is an error, not a complete run of one page."""
    async with IgnoresPage(records=1000, per_page=100) as api:
        result = await run(api.url)

    error = assert_fails(result, streampage.PaginationError)
    assert isinstance(error, streampage.PaginationError)
    assert error.page == 2  # the page that came back as page 1
    assert "'page'" in str(error)  # names the parameter the server ignores
    assert api.handled == 2, "fanned out before the guess was confirmed"


async def test_page_number_on_a_cursor_api_that_ignores_the_page_parameter() -> None:
    """PageNumber() against a cursor API used to fetch page 1 forever."""
    async with CursorIgnoresPage(records=100) as api:
        result = await run(api.url, pages=PageNumber())

    error = assert_fails(result, streampage.PaginationError)
    assert isinstance(error, streampage.PaginationError)
    assert error.page == 2  # the page that came back as page 1
    assert api.handled < 50


@pytest.mark.parametrize(
    "paginator",
    [Cursor(), NextURL(), LinkHeader()],
    ids=["Cursor", "NextURL", "LinkHeader"],
)
async def test_a_walk_paginator_on_a_page_number_api(paginator: Any) -> None:
    """Cursor(), NextURL() and LinkHeader() on fastapi-pagination's Page used to deliver the
    first page and end. The field a walk reads is not there: a ConfigurationError that lists
    the keys that are (a Link header is no field: then the total says records are missing)."""
    async with FastAPIPage(records=500) as api:
        result = await run(api.url, pages=paginator)

    if isinstance(paginator, LinkHeader):
        error = assert_fails(result, streampage.IncompleteError)
        assert isinstance(error, streampage.IncompleteError)
        assert (error.expected, error.delivered) == (500, 50)
    else:
        error = assert_fails(result, streampage.ConfigurationError)
        for key in ("items", "total", "page", "size", "pages"):
            assert key in str(error), f"{key!r} not listed in: {error}"


@pytest.mark.parametrize(
    ("paginator", "records"),
    [
        (NextURL(), "data.items"),
        (Cursor(field="meta.next_cursor"), "results"),
        (NextURL(field="links.next"), "results"),
        (PageNumber(size=10, total_items="meta.total"), "results"),
    ],
    ids=["records-path", "cursor-field", "next-url-field", "total-field"],
)
async def test_a_named_field_that_is_not_there_commits_nothing(
    tmp_path: Path, paginator: Any, records: str
) -> None:
    """A records path, cursor, next URL or total that names no field of the first page used
    to give 0 records (or one page) with every page checkpointed. It is a ConfigurationError
    listing the keys that are there, raised before anything is committed to the sink."""
    path = tmp_path / "out.jsonl"
    sink = streampage.sinks.JSONLines(path)
    async with DRFPageNumber(records=100) as api:
        with pytest.raises(streampage.ConfigurationError) as caught:
            async with asyncio.timeout(WITHIN):
                await streampage.stream(api.url, pages=paginator).records(records).into(sink)

    for key in ("count", "next", "results"):
        assert key in str(caught.value), f"{key!r} not listed in: {caught.value}"
    assert not path.exists() or path.read_bytes() == b"", "records were written"
    assert not sink.journal.exists() or sink.journal.read_bytes() == b"", "pages were committed"


async def test_page_number_on_a_server_that_caps_the_page_size_says_what_size_to_ask() -> None:
    """PageNumber(size=2000, total_items="count") where the server serves 1000 a page used to
    deliver pages 1..5 of 1000 records: 5,000 of 10,000. Page 1 is short while the count says
    more: a PaginationError telling the size to ask for."""
    async with CapsPageSize(records=10_000, cap=1000) as api:
        result = await run(api.url, pages=PageNumber(size=2000, total_items="count"))

    error = assert_fails(result, streampage.PaginationError)
    assert mentions(error, 1000)


async def test_offset_steps_by_what_a_capped_server_serves() -> None:
    """Offset(limit=2000, total_items="count") on a server that serves 1000 a page: the
    offsets go on from what was served, so every record comes."""
    async with CapsPageSize(records=10_000, cap=1000) as api:
        result = await run(api.url, pages=Offset(limit=2000, total_items="count"))

    assert_every_record_once(result, api.ids)


async def test_offset_without_a_total_on_a_capped_server() -> None:
    """Offset(limit=2000) with no total named used to take the short first page for the last:
    1,000 of 10,000. The first page is fetched alone and tells what the server serves."""
    async with CapsPageSize(records=10_000, cap=1000) as api:
        result = await run(api.url, pages=Offset(limit=2000))

    assert_every_record_once(result, api.ids)  # the offsets step by the 1000 served


async def test_offset_steps_by_what_a_server_serves_above_the_limit() -> None:
    """Offset(limit=5, limit_param=None) does not send the limit: DRF serves its default
    of 10 a page, and offsets stepping by 5 would deliver every record twice."""
    async with DRFLimitOffset(records=95, default_limit=10) as api:
        result = await run(api.url, pages=Offset(limit=5, limit_param=None))

    assert_every_record_once(result, api.ids)


@pytest.mark.parametrize("max_pages", [None, 300])
async def test_page_number_on_json_server_1_ends_where_the_last_page_repeats(
    max_pages: int | None,
) -> None:
    """json-server 1.x answers every page past the end with the last page again: PageNumber()
    without a total never ended (with max_pages=300: 20,000 duplicates). A page equal to the
    one before it, past the data, is the end."""
    async with JSONServer1(records=1000) as api:
        pages = PageNumber(param="_page", size=100, size_param="_per_page")
        result = await run(api.url, pages=pages, max_pages=max_pages)

    assert_every_record_once(result, api.ids)
    assert api.handled < 60


async def test_auto_fans_out_a_next_link_that_comes_with_a_count() -> None:
    """DRF's ``{"count", "next", ...}``: Auto used to walk the next links one at a time,
    although the count tells every page. ``?page=2`` differs from the first URL in one
    whole-number parameter, so the pages are fetched in parallel."""
    async with DRFPageNumber(records=400, latency=0.01) as api:
        result = await run(api.url, concurrency=8)

    assert_every_record_once(result, api.ids)
    assert api.max_in_flight > 1, "the pages were fetched one at a time"


async def test_auto_pages_drf_limit_offset_pagination() -> None:
    """DRF's LimitOffsetPagination: ``count`` and a next link with ``limit`` and ``offset``."""
    async with DRFLimitOffset(records=355, latency=0.002) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)


async def test_offset_on_drf_limit_offset_that_caps_the_limit() -> None:
    """DRF silently cuts a limit above ``max_limit``: Offset(limit=100) gets 50 a page while
    the count says more, and steps by what was served."""
    async with DRFLimitOffset(records=420, max_limit=50) as api:
        result = await run(api.url, pages=Offset(limit=100, total_items="count"))

    assert_every_record_once(result, api.ids)


async def test_a_cursor_that_is_a_whole_url_points_at_next_url() -> None:
    """Cursor(field="next") on DRF's CursorPagination, whose ``next`` is a full URL, used to
    paste the URL into ``?cursor=``: the server read a bad cursor as page 1, 100 duplicates."""
    async with DRFCursor(records=200) as api:
        result = await run(api.url, pages=Cursor(field="next"))

    error = assert_fails(result, streampage.ConfigurationError)
    assert "NextURL" in str(error)


async def test_stats_requests_counts_requests_sent_including_those_past_the_end() -> None:
    """stats.requests used to count responses: requests cancelled or discarded past the end
    were missing from it (100 where the server saw 149). The server counts requests off the
    wire; the pages past the end are held there until the run cancels them."""
    contract = Contract(style="page", records=100, per_page=10, end="404")

    def delay(request: Any) -> float:
        page = int(request.query.get("page", 1))
        return 0.0 if page <= 10 else 0.05 if page == 11 else 2.0

    async with ContractAPI(contract, delay=delay) as api:
        result = await run(api.url, pages=PageNumber(), concurrency=4)
        await api.settle()

    assert_every_record_once(result, api.ids)
    stats = result.stream.stats
    assert stats.requests == api.received, f"stats.requests {stats.requests}, sent {api.received}"
    assert stats.past_end > 0
    assert stats.requests > 11  # pages 12.. were in flight when page 11 said "the end"


# ---------------------------------------------------------------------- evidence over guesses


async def test_a_run_that_falls_short_of_the_total_is_an_incomplete_error() -> None:
    """The count says 1000, the server has 500 (pages 51..100 come back empty): a clear loss.
    The run fails at its end saying what was expected against what was delivered."""
    async with DRFPageNumber(records=500, claim=1000) as api:
        result = await run(api.url, pages=PageNumber(size=10, total_items="count"))

    error = assert_fails(result, streampage.IncompleteError)
    assert isinstance(error, streampage.IncompleteError)
    assert isinstance(error, streampage.PageError)
    assert (error.expected, error.delivered, error.unit) == (1000, 500, "records")
    assert "count" in error.evidence
    assert mentions(error, 1000) and mentions(error, 500)
    assert sorted(result.ids) == api.ids  # what the server had did arrive


async def test_an_incomplete_run_under_skip_is_a_listed_failure() -> None:
    """With on_error="skip" the IncompleteError is in stream.failures, not raised."""
    async with DRFPageNumber(records=500, claim=1000) as api:
        result = await run(api.url, pages=PageNumber(size=10, total_items="count"), on_error="skip")

    assert result.error is None
    assert sorted(result.ids) == api.ids
    errors = [f.error for f in result.stream.failures]
    incomplete = [e for e in errors if isinstance(e, streampage.IncompleteError)]
    assert len(incomplete) == 1, errors
    assert (incomplete[0].expected, incomplete[0].delivered) == (1000, 500)


async def test_a_total_that_grows_a_little_during_the_run_is_not_an_error() -> None:
    """A live API gains 5 records while the run goes (the count drifts from 1001 to 1005):
    the run ends normally, every record it was told about once."""
    async with DRFPageNumber(records=1000, grow=5) as api:
        result = await run(api.url, pages=PageNumber(size=10, total_items="count"))

    assert result.error is None, repr(result.error)
    assert result.duplicates == []
    assert set(range(1, 1001)) <= set(result.ids)


async def test_a_run_that_delivers_its_total_is_verified() -> None:
    async with FastAPIPage(records=480) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)
    assert result.stream.completeness.status == "verified"


async def test_a_cursor_walk_without_any_total_is_not_verifiable() -> None:
    """DRF's CursorPagination has no count: the run ends normally and says it could not
    check."""
    async with DRFCursor(records=230) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)
    assert result.stream.completeness.status == "not verifiable"
    assert isinstance(result.stream.completeness.notes, list)


async def test_the_cli_exits_1_when_records_are_missing(tmp_path: Path) -> None:
    """`streampage fetch` on an API whose count says 1000 while it serves 500: exit code 1,
    and the numbers on stderr."""
    out = tmp_path / "items.jsonl"
    async with DRFPageNumber(records=500, claim=1000) as api:
        run = await cli_fetch(api.url, "-o", str(out))

    assert run.code == 1, run
    assert mentions(run.err, 1000) and mentions(run.err, 500)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------- what Auto recognises


@pytest.mark.parametrize(
    ("offset", "limit", "items"),
    [
        ("offset", "limit", "items"),
        ("skip", "take", "items"),
        ("start", "rows", "items"),
        ("skip", "limit", "products"),  # DummyJSON
    ],
    ids=["offset-limit", "skip-take", "start-rows", "dummyjson"],
)
async def test_auto_recognises_offset_bodies_with_a_total(
    offset: str, limit: str, items: str
) -> None:
    async with OffsetEcho(records=310, offset=offset, limit=limit, items=items) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)


@pytest.mark.parametrize("name", ["next_page", "after", "cursor", "continuation", "nextPageToken"])
async def test_auto_recognises_cursor_fields(name: str) -> None:
    async with NamedCursor(records=95, field=name) as api:
        result = await run(api.url)

    assert_every_record_once(result, api.ids)


@pytest.mark.parametrize(
    ("make", "query"),
    [
        (lambda: DRFPageNumber(records=95), ""),
        (lambda: JSONServer017(records=95), "?_page=1&_limit=10"),
        (lambda: JSONServer1(records=95), "?_page=1&_per_page=10"),
        (lambda: FastAPIPage(records=95, default_size=10), ""),
        (lambda: LaravelPaginator(records=95), ""),
    ],
    ids=["drf", "json-server-0.17", "json-server-1", "fastapi-pagination", "laravel"],
)
async def test_auto_pages_page_number_bodies_of_common_frameworks(make: Any, query: str) -> None:
    async with make() as api:
        result = await run(api.url + query)

    assert_every_record_once(result, api.ids)


@pytest.mark.parametrize(
    ("make", "query", "kept"),
    [
        (lambda: FastAPILimitOffset(records=230), "?limit=20&offset=0", {"limit": ["20"]}),
        (
            lambda: DRFPageNumber(records=230, page_size_query_param="page_size"),
            "?page_size=25",
            {"page_size": ["25"]},
        ),
        (lambda: FastAPIPage(records=230), "?page=1&size=30", {"size": ["30"]}),
        (lambda: JSONServer017(records=230), "?_page=1&_limit=25", {"_limit": ["25"]}),
    ],
    ids=["limit-offset", "drf-page-size", "fastapi-size", "json-server-limit"],
)
async def test_auto_reuses_offset_and_size_parameters_in_the_url(
    make: Any, query: str, kept: dict[str, list[str]]
) -> None:
    """The URL's own page, offset and size parameters are used, never sent twice."""
    async with make() as api:
        result = await run(api.url + query)

    assert_every_record_once(result, api.ids)
    for sent in queries(api):
        assert all(len(values) == 1 for values in sent.values()), f"sent twice: {sent}"
        for name, value in kept.items():
            assert sent.get(name) == value, f"{name} not kept: {sent}"


async def test_a_guessed_page_number_is_confirmed_on_page_2_before_it_fans_out() -> None:
    """A body that only echoes ``page: 1`` is a guess: page 2 is fetched alone, and checked,
    before pages 3.. are requested in parallel."""
    contract = Contract(style="page", records=200, per_page=10)
    async with ContractAPI(contract, latency=0.005) as api:
        result = await run(api.url, concurrency=8)

    assert_every_record_once(result, api.ids)
    events = list(api.numbers("page"))
    page_2_done = events.index(("end", 2))
    later = [n for kind, n in events[:page_2_done] if kind == "start" and n >= 3]
    assert later == [], f"pages {later} were requested before page 2 confirmed the guess"
    assert api.max_in_flight > 1


# ---------------------------------------------------------------------- explicit paginators


async def test_page_number_on_a_server_that_ignores_it_names_the_parameter() -> None:
    """Page 2 equal to page 1: the server ignores the parameter. Nothing is delivered twice."""
    async with IgnoresPage(records=1000, per_page=100, shape="object") as api:
        result = await run(api.url, pages=PageNumber(param="pageNo"))

    error = assert_fails(result, streampage.PaginationError)
    assert "pageNo" in str(error)


async def test_a_cursor_holding_ampersand_equals_and_hash_is_one_query_value() -> None:
    """The cursor ``after=10&sig=5#end`` goes back whole as ``?cursor=``; its ``&``, ``=``
    and ``#`` never make parameters (or a fragment) of their own. The server answers 400
    to a cursor it did not issue."""
    contract = Contract(style="cursor", records=95, per_page=10)
    async with ContractAPI(contract) as api:
        result = await run(api.url, pages=Cursor())

    assert_every_record_once(result, api.ids)
    assert all(set(q) == {"cursor"} for q in queries(api)[1:]), api.queries


async def test_fastapi_cursor_page_with_the_cursor_named() -> None:
    async with FastAPICursor(records=260, quoted=False) as api:
        result = await run(api.url, pages=Cursor(field="next_page"))

    assert_every_record_once(result, api.ids)


async def test_a_known_total_fetches_nothing_past_the_end() -> None:
    async with FastAPIPage(records=500) as api:
        result = await run(
            api.url, pages=PageNumber(size=50, size_param="size", total_pages="pages")
        )
        await api.settle()

    assert_every_record_once(result, api.ids)
    assert result.stream.stats.requests == api.received == 10
    assert result.stream.stats.past_end == 0


# ---------------------------------------------------------------------- the demo API


@pytest.mark.parametrize("style", STYLES)
async def test_serve_demo_in_every_style_with_no_pagination_options(style: str) -> None:
    runner, url = await serve(items=700, latency=0, per_page=25, style=style)
    try:
        result = await run(url)
    finally:
        await runner.cleanup()

    assert_every_record_once(result, list(range(1, 701)))


# ---------------------------------------------------------------------- the imitations themselves


async def get(url: str) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_the_imitations_answer_past_the_end_as_their_frameworks_do() -> None:
    async with DRFPageNumber(records=25) as drf:
        status, _, body = await get(drf.url + "?page=4")
        assert (status, body) == (404, {"detail": "Invalid page."})
    async with JSONServer017(records=25) as js017:
        status, headers, body = await get(js017.url + "?_page=4&_limit=10")
        assert (status, body, headers["Link"], headers["X-Total-Count"]) == (200, [], "", "25")
    async with JSONServer1(records=25) as js1:
        _, _, last = await get(js1.url + "?_page=3&_per_page=10")
        _, _, past = await get(js1.url + "?_page=9&_per_page=10")
        assert past == last and [r["id"] for r in past["data"]] == [str(i) for i in range(21, 26)]
        _, _, filtered = await get(js1.url + "?_page=2&_per_page=10&page=2")
        assert (filtered["items"], filtered["data"]) == (0, [])
    async with FastAPIPage(records=25) as fastapi:
        status, _, body = await get(fastapi.url + "?size=101")
        assert status == 422 and body["detail"][0]["loc"] == ["query", "size"]


async def test_the_imitations_walk_to_every_record_by_their_own_links() -> None:
    async with DRFCursor(records=25) as drf, FastAPICursor(records=25, default_size=10) as fa:
        url: str | None = drf.url
        ids: list[int] = []
        while url is not None:
            _, _, body = await get(url)
            ids += record_ids(body)
            url = body["next"]
        assert ids == drf.ids and "%3D" in drf.queries[1]
        cursor, ids = "", []
        while True:
            _, _, body = await get(fa.url + (f"?cursor={cursor}" if cursor else ""))
            ids += record_ids(body)
            if body["next_page"] is None:
                break
            cursor = body["next_page"]
        assert ids == fa.ids and cursor.endswith("%3D")

"""stream(on_event=...): what a stream learns and decides, as typed events, per paginator style."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import PageServer

import streampage
from streampage import events
from streampage.demo import make_app
from streampage.sinks import JSONLines

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def demo() -> AsyncIterator[Serve]:
    """The demo API in this process: ``await demo(style=..., items=...)`` gives its URL."""
    runners: list[web.AppRunner] = []

    async def serve(**options: Any) -> str:
        runner = web.AppRunner(make_app(latency=0.0, **options), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/items"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def run(url: str, **options: Any) -> tuple[list[events.Event], streampage.Stream[Any]]:
    seen: list[events.Event] = []
    s = streampage.stream(url, on_event=seen.append, **options)
    async with s:
        async for _page in s:
            pass
    return seen, s


def of(seen: list[events.Event], kind: type[events.Event]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


@pytest.mark.parametrize(
    ("style", "chosen", "total"),
    [
        ("page", streampage.PageNumber, events.Total(40, 1000)),
        ("offset", streampage.Offset, events.Total(40, 1000)),
        ("cursor", streampage.Cursor, None),  # the demo's cursor pages say no total
        ("next-url", streampage.NextURL, None),
        ("link", streampage.LinkHeader, events.Total(40, None)),  # rel="last"
    ],
)
async def test_auto_tells_its_choice_and_the_total_for_each_style(
    demo: Serve, style: str, chosen: type, total: events.Total | None
) -> None:
    url = await demo(style=style, items=1000, per_page=25)
    seen, s = await run(url)
    choices = of(seen, events.PaginatorChosen)
    assert len(choices) == 1
    assert isinstance(choices[0].paginator, chosen)
    assert choices[0].url.startswith("http://127.0.0.1:")
    # the choice comes before anything else but the limit's growth at page 1's response
    # (the slow start doubles from the first success on)
    told = [e for e in seen if not isinstance(e, events.ConcurrencyChanged)]
    assert told.index(choices[0]) == 0
    totals = of(seen, events.TotalDiscovered)
    assert s.total == total
    if total is None:
        assert totals == []
    else:
        assert [(e.pages, e.records) for e in totals] == [(total.pages, total.records)]
    assert s.stats.pages == 40


async def test_a_named_paginator_tells_the_total_it_read_and_no_choice(demo: Serve) -> None:
    url = await demo(style="page", items=1000, per_page=25)
    pages = streampage.PageNumber(total_pages="total_pages", size_param=None)
    seen, s = await run(url, pages=pages)
    assert of(seen, events.PaginatorChosen) == []
    [total] = of(seen, events.TotalDiscovered)
    assert total.pages == 40
    assert "total_pages" in total.evidence
    assert s.total == events.Total(40, 1000)


async def test_pages_past_the_end_are_told(page_server: Callable[..., Any]) -> None:
    server: PageServer = await page_server(pages=5, per_page=2)
    seen, s = await run(server.url, pages=streampage.PageNumber(), concurrency=4)
    past = of(seen, events.PastEnd)
    assert past, "an open-ended run finds the end by fetching past it"
    assert all(e.page > 5 for e in past)
    assert len(past) == s.stats.past_end
    assert s.total is None  # nothing said how much there is


async def test_retries_and_failures_are_told(page_server: Callable[..., Any]) -> None:
    server: PageServer = await page_server(pages=4, per_page=2, fail={3: 500})
    retry = streampage.RetryPolicy(attempts=3, backoff=0.001, max_wait=0.002)
    seen, s = await run(
        server.url,
        pages=streampage.PageNumber(stop=4),
        retry=retry,
        on_error="skip",
    )
    retries = of(seen, events.Retrying)
    assert [(e.page, e.attempt) for e in retries] == [(3, 1), (3, 2)]
    assert all(e.reason == "status 500" for e in retries)
    [failed] = of(seen, events.PageFailed)
    assert failed.page == 3
    assert isinstance(failed.error, streampage.HTTPStatusError)
    assert [f.page for f in s.failures] == [3]


async def test_a_long_retry_after_pauses_and_resumes_the_pool() -> None:
    refused: set[int] = set()

    async def handler(request: web.Request) -> web.Response:
        n = int(request.query["page"])
        if n == 2 and n not in refused:  # once: "come back in a second"
            refused.add(n)
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.json_response({"page": n, "items": [{"id": n}]})

    app = web.Application()
    app.router.add_get("/items", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/items"
        retry = streampage.RetryPolicy(pool_pause=0.5)
        seen, s = await run(url, pages=streampage.PageNumber(stop=3), retry=retry)
    finally:
        await runner.cleanup()
    [paused] = of(seen, events.PoolPaused)
    assert paused.seconds == 1.0
    assert "page 2" in paused.reason
    [resumed] = of(seen, events.PoolResumed)
    assert seen.index(paused) < seen.index(resumed)
    assert [(e.page, e.reason) for e in of(seen, events.Retrying)] == [(2, "status 429")]
    assert s.stats.pages == 3


async def test_the_adaptive_limit_tells_its_moves(page_server: Callable[..., Any]) -> None:
    server: PageServer = await page_server(pages=60, per_page=1)
    seen, _s = await run(server.url, pages=streampage.PageNumber(stop=60), concurrency=16)
    moves = of(seen, events.ConcurrencyChanged)
    assert moves, "the limit starts low and grows to the concurrency"
    assert all(e.limit != e.previous for e in moves)
    assert moves[-1].limit == 16


async def test_into_tells_each_commit(page_server: Callable[..., Any], tmp_path: Any) -> None:
    server: PageServer = await page_server(pages=6, per_page=5)
    seen: list[events.Event] = []
    s = streampage.stream(
        server.url, pages=streampage.PageNumber(stop=6), on_event=seen.append, concurrency=1
    )
    await s.records("items").into(JSONLines(tmp_path / "out.jsonl"), batch=10, checkpoint="c")
    commits = of(seen, events.BatchCommitted)
    assert sum(e.records for e in commits) == 30
    assert sum(e.pages for e in commits) == 6
    assert [e.committed_pages for e in commits] == sorted(e.committed_pages for e in commits)
    assert commits[-1].committed_pages == 6
    assert {e.checkpoint for e in commits} == {"c"}


def test_an_async_callback_is_refused() -> None:
    async def handler(event: events.Event) -> None:
        pass

    with pytest.raises(streampage.ConfigurationError, match="plain function"):
        streampage.stream("http://127.0.0.1:1/x", on_event=handler)  # type: ignore[arg-type]

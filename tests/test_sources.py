"""Many sources in one stream: each complete, one pool and one set of limits, read lazily."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import HANG, collect

import streampage
from streampage import Cursor, PageNumber, Source


class MultiServer:
    """``/items?src=K&page=N`` (page numbers) and ``/walk?src=K&cursor=C`` (cursors): source
    K has ``pages(K)`` pages of two records each, ``"K-N-i"``; past the end, an empty page."""

    def __init__(self, pages: Callable[[int], int], delay: Callable[[int, int], float]) -> None:
        self.pages = pages
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def _records(self, src: int, n: int) -> list[str]:
        return [f"{src}-{n}-{i}" for i in range(2)] if 1 <= n <= self.pages(src) else []

    async def _enter(self, src: int, n: int) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay(src, n))

    async def items(self, request: web.Request) -> web.Response:
        src, n = int(request.query["src"]), int(request.query.get("page", "1"))
        await self._enter(src, n)
        self.in_flight -= 1
        return web.json_response({"items": self._records(src, n)})

    async def walk(self, request: web.Request) -> web.Response:
        src, n = int(request.query["src"]), int(request.query.get("cursor", "1"))
        await self._enter(src, n)
        self.in_flight -= 1
        nxt = str(n + 1) if n < self.pages(src) else None
        return web.json_response({"items": self._records(src, n), "next": nxt})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/items", self.items)
        app.router.add_get("/walk", self.walk)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def multi_server() -> AsyncIterator[Callable[..., Awaitable[MultiServer]]]:
    servers: list[MultiServer] = []

    async def make(
        pages: Callable[[int], int] = lambda src: 3,
        delay: Callable[[int, int], float] = lambda src, n: 0.0,
    ) -> MultiServer:
        server = MultiServer(pages, delay)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


def expected(server: MultiServer, sources: range) -> list[str]:
    return sorted(
        r
        for s in sources
        for n in range(1, server.pages(s) + 1)
        for r in [f"{s}-{n}-0", f"{s}-{n}-1"]
    )


def records(pages: list[streampage.Page[Any]]) -> list[str]:
    return sorted(r for p in pages for r in p.data["items"])


async def test_every_source_complete_under_one_concurrency_limit(multi_server):
    server = await multi_server(pages=lambda src: src % 5 + 1, delay=lambda s, n: 0.002)
    sources = [(f"{server.url}/items", {"src": s}) for s in range(40)]

    pages = await collect(streampage.stream(sources, pages=PageNumber(), concurrency=8))

    assert records(pages) == expected(server, range(40))
    assert server.max_in_flight <= 8


async def test_each_page_says_which_source_it_came_from(multi_server):
    server = await multi_server()
    sources = [Source(f"{server.url}/items", {"src": s}, key=f"customer-{s}") for s in range(5)]

    pages = await collect(streampage.stream(sources, pages=PageNumber(stop=3)))

    for page in pages:
        src = page.source.key.removeprefix("customer-")
        assert all(r.startswith(f"{src}-{page.number}-") for r in page.data["items"])
    assert {p.source.key for p in pages} == {f"customer-{s}" for s in range(5)}


async def test_ordered_is_per_source_and_a_slow_source_does_not_hold_the_others(multi_server):
    # source 0's first page takes 0.5 s; every other source is fast and may finish first
    server = await multi_server(
        pages=lambda src: 4,
        delay=lambda s, n: 0.5 if (s, n) == (0, 1) else random.uniform(0, 0.01),
    )
    sources = [(f"{server.url}/items", {"src": s}) for s in range(6)]
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(HANG):
        async with streampage.stream(sources, pages=PageNumber(), concurrency=6, ordered=True) as s:
            async for page in s:
                seen.append((int(page.source.params["src"]), page.number))

    for src in range(6):
        numbers = [n for s_, n in seen if s_ == src]
        assert numbers == [1, 2, 3, 4]
    assert seen.index((0, 1)) > seen.index((5, 4))  # others were delivered while 0 waited


async def test_fifty_cursor_walks_run_at_once(multi_server):
    server = await multi_server(pages=lambda src: 5, delay=lambda s, n: 0.02)
    sources = [(f"{server.url}/walk", {"src": s}) for s in range(50)]

    pages = await collect(
        streampage.stream(sources, pages=Cursor(field="next"), concurrency=50, ordered=True)
    )

    assert records(pages) == expected(server, range(50))
    assert server.max_in_flight >= 40  # sequential within a walk, parallel across walks
    assert server.max_in_flight <= 50


async def test_a_source_may_bring_its_own_paginator(multi_server):
    server = await multi_server(pages=lambda src: 3)
    sources = [
        Source(f"{server.url}/items", {"src": 0}),  # the stream's: until the empty page
        Source(f"{server.url}/walk", {"src": 1}, pages=Cursor(field="next")),
    ]

    pages = await collect(streampage.stream(sources, pages=PageNumber()))

    assert records(pages) == expected(server, range(2))


async def test_sources_from_an_async_iterable_are_read_lazily(multi_server):
    server = await multi_server(pages=lambda src: 1, delay=lambda s, n: 0.001)
    read = 0

    async def sources() -> AsyncIterator[tuple[str, dict[str, int]]]:
        nonlocal read
        for s in range(300):
            read += 1
            yield (f"{server.url}/items", {"src": s})

    delivered = 0
    async with streampage.stream(sources(), pages=PageNumber(stop=1), concurrency=4) as s:
        async for _page in s:
            delivered += 1
            # never more than the active walks, the work queue and the buffer ahead
            assert read <= delivered + 4 + 4 + 4 + 2
    assert delivered == 300


async def test_ten_thousand_sources_cost_constant_memory(multi_server):
    server = await multi_server(pages=lambda src: 1)

    async def peak_for(count: int) -> int:
        def sources() -> Any:
            return ((f"{server.url}/items", {"src": s}) for s in range(count))

        tracemalloc.start()
        try:
            n = 0
            async with streampage.stream(sources(), pages=PageNumber(stop=1), concurrency=16) as s:
                async for _page in s:
                    n += 1
            assert n == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = await peak_for(1_000), await peak_for(10_000)
    assert large < small * 1.5 + 256 * 1024, (small, large)


async def test_a_bad_source_in_the_iterable_is_a_clear_error(multi_server):
    server = await multi_server(pages=lambda src: 1)
    sources = [(f"{server.url}/items", {"src": 0}), "ftp://example.com/x"]

    with pytest.raises(streampage.ConfigurationError, match="not an http"):
        await collect(streampage.stream(sources, pages=PageNumber(stop=1)))


def test_something_that_is_not_a_source_fails_at_once() -> None:
    with pytest.raises(streampage.ConfigurationError, match="neither a URL nor sources"):
        streampage.stream(42)  # type: ignore[call-overload]


async def test_stream_params_apply_to_every_source_and_source_params_win(multi_server):
    server = await multi_server(pages=lambda src: 2)
    sources = [Source(f"{server.url}/items", {"src": 1}), Source(f"{server.url}/items")]

    pages = await collect(streampage.stream(sources, pages=PageNumber(), params={"src": 0}))

    assert records(pages) == expected(server, range(2))

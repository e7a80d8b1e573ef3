"""ordered=True: pages come out in page order, through a bounded reorder window."""

from __future__ import annotations

import asyncio
import random

import pytest
from conftest import HANG, collect

import streampage
from streampage import HTTPStatusError, PageNumber


def jitter(seed: int, most: float) -> float:
    return random.Random(seed).uniform(0, most)


async def test_pages_come_out_in_page_order_despite_random_delays(page_server):
    server = await page_server(pages=120, delay=lambda n: jitter(n, 0.01))
    s = streampage.stream(server.url, pages=PageNumber(stop=120), concurrency=10, ordered=True)

    pages = await collect(s)

    assert [p.number for p in pages] == list(range(1, 121))
    assert all(p.data == server.body(p.number) for p in pages)
    # the server really did finish them out of order, so the stream reordered them
    assert server.completed != sorted(server.completed)


async def test_ordered_with_unknown_end_stops_in_order(page_server):
    server = await page_server(pages=37, past_end="404", delay=lambda n: jitter(n, 0.005))
    s = streampage.stream(server.url, pages=PageNumber(), concurrency=8, ordered=True)

    pages = await collect(s)

    assert [p.number for p in pages] == list(range(1, 38))
    assert max(server.requests) > 37, "expected speculative requests past the end"


async def _held_head_window(page_server, *, concurrency, window, head=1, pages=300):
    """Hold page ``head`` at the server; consume everything before it; return what the
    server saw requested while the head was pending, then let the stream finish."""
    server = await page_server(pages=pages)
    gate = server.hold(head)
    kwargs = {} if window is None else {"window": window}
    s = streampage.stream(
        server.url,
        pages=PageNumber(stop=pages),
        concurrency=concurrency,
        ordered=True,
        **kwargs,
    )
    effective = window if window is not None else 4 * concurrency
    limit = head + effective  # the first page that must not be requested while head waits
    received: list[int] = []
    seen_while_pending: set[int] = set()

    async def consume() -> None:
        async with s:
            async for page in s:
                received.append(page.number)

    async with asyncio.timeout(HANG):
        consumer = asyncio.create_task(consume())
        # the workers fill the window behind the held head page ...
        await server.wait_for(lambda: set(range(head + 1, limit)) <= set(server.completed))
        # ... and stop there: give them every chance to overshoot
        await asyncio.sleep(0.1)
        seen_while_pending = set(server.requests)
        assert received == list(range(1, head)), "a page was yielded out of order"
        gate.set()
        await consumer

    assert received == list(range(1, pages + 1))
    return seen_while_pending, limit


async def test_slow_head_page_others_keep_fetching_inside_default_window(page_server):
    seen, limit = await _held_head_window(page_server, concurrency=4, window=None)

    assert limit == 1 + 16  # default window is 4 * concurrency
    assert set(range(1, limit)) <= seen
    assert max(seen) < limit, f"page {max(seen)} requested beyond the window"


@pytest.mark.parametrize(("concurrency", "window"), [(4, 6), (4, 40), (2, 2), (8, 8)])
async def test_window_is_configurable(page_server, concurrency, window):
    seen, limit = await _held_head_window(page_server, concurrency=concurrency, window=window)

    assert limit == 1 + window
    assert set(range(1, limit)) <= seen
    assert max(seen) < limit, f"page {max(seen)} requested beyond the window"


async def test_window_follows_the_head(page_server):
    # pages 1..9 are consumed, then page 10 is held: the window is now pages 10..10+w-1
    seen, limit = await _held_head_window(page_server, concurrency=3, window=7, head=10)

    assert limit == 17
    assert set(range(1, limit)) <= seen
    assert max(seen) < limit


async def test_ordered_error_surfaces_at_its_place_in_the_order(page_server):
    # page 5 fails, and slowly: pages after it are fetched first but must not be yielded
    server = await page_server(pages=30, fail={5: 500}, delay=lambda n: 0.1 if n == 5 else 0)
    quick = streampage.RetryPolicy(attempts=2, backoff=0.01)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=30), concurrency=6, ordered=True, retry=quick
    )
    received: list[int] = []

    with pytest.raises(HTTPStatusError) as excinfo:
        async with asyncio.timeout(HANG), s:
            async for page in s:
                received.append(page.number)

    assert excinfo.value.page == 5
    assert excinfo.value.status == 500
    assert received == [1, 2, 3, 4]
    assert {6, 7, 8} <= set(server.completed)


async def test_ordered_slow_consumer_keeps_unconsumed_pages_within_window(page_server):
    window = 10
    server = await page_server(pages=200)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=200), concurrency=4, ordered=True, window=window
    )
    consumed = 0
    most_ahead = 0

    async with asyncio.timeout(HANG), s:
        async for page in s:
            consumed += 1
            assert page.number == consumed
            most_ahead = max(most_ahead, server.responses_sent - consumed)
            await asyncio.sleep(0.001)

    assert consumed == 200
    assert most_ahead <= window
    assert most_ahead >= 4, "the fetchers never got ahead of the consumer"

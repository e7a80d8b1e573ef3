"""Unordered streaming: every page exactly once, bounded concurrency, bounded memory, stats."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from conftest import HANG, collect

import streampage
from streampage import PageNumber


def jitter(seed: int, most: float) -> float:
    """A delay in [0, most) that is random but the same for the same page in every run."""
    return random.Random(seed).uniform(0, most)


async def test_every_page_exactly_once_with_matching_data(page_server):
    server = await page_server(pages=300, delay=lambda n: jitter(n, 0.004))
    s = streampage.stream(server.url, pages=PageNumber(start=1, stop=300), concurrency=20)

    pages = await collect(s)

    numbers = [p.number for p in pages]
    assert Counter(numbers) == Counter(range(1, 301)), "a page is missing or repeated"
    for page in pages:
        assert page.data == server.body(page.number)
    # with a known range nothing is fetched twice or speculatively
    assert sorted(server.requests) == list(range(1, 301))


async def test_unordered_stream_does_yield_pages_as_they_arrive(page_server):
    # page 1 is slow: an unordered stream must not wait for it before yielding others
    server = await page_server(pages=20, delay=lambda n: 0.3 if n == 1 else 0.0)
    s = streampage.stream(server.url, pages=PageNumber(stop=20), concurrency=5)

    pages = await collect(s)

    numbers = [p.number for p in pages]
    assert sorted(numbers) == list(range(1, 21))
    assert numbers[0] != 1
    assert numbers[-1] == 1


async def test_default_paginator_reads_pages_until_an_empty_one(page_server):
    server = await page_server(pages=12)

    pages = await collect(streampage.stream(server.url, concurrency=4))

    assert sorted(p.number for p in pages) == list(range(1, 13))
    assert all(p.data == server.body(p.number) for p in pages)


async def test_page_carries_its_response_metadata(page_server):
    server = await page_server(pages=3, headers=lambda n: {"X-Page": str(n)})

    pages = await collect(streampage.stream(server.url, pages=PageNumber(stop=3)))

    for page in pages:
        info = page.response
        assert info.status == 200
        assert info.url.query["page"] == str(page.number)
        assert info.url.path == "/items"
        assert info.headers["X-Page"] == str(page.number)
        assert info.elapsed >= 0


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_server_never_sees_more_than_concurrency_requests(page_server, concurrency, ordered):
    server = await page_server(pages=60, delay=lambda n: 0.003)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=60), concurrency=concurrency, ordered=ordered
    )

    pages = await collect(s)

    assert len(pages) == 60
    assert server.max_in_flight <= concurrency
    # and the requests really do run concurrently, up to the limit
    assert server.max_in_flight == concurrency


async def test_connections_are_reused_not_one_per_page(page_server):
    server = await page_server(pages=100)

    await collect(streampage.stream(server.url, pages=PageNumber(stop=100), concurrency=4))

    assert server.connections_made <= 4


async def test_slow_consumer_keeps_fetched_but_unconsumed_pages_bounded(page_server):
    concurrency, buffer = 4, 3
    server = await page_server(pages=200)
    s = streampage.stream(
        server.url, pages=PageNumber(stop=200), concurrency=concurrency, buffer=buffer
    )
    consumed = 0
    most_ahead = 0

    async with asyncio.timeout(HANG), s:
        async for _page in s:
            consumed += 1
            most_ahead = max(most_ahead, server.responses_sent - consumed)
            await asyncio.sleep(0.001)

    assert consumed == 200
    # the result buffer, plus one finished page held by each worker, plus slack of one
    assert most_ahead <= concurrency + buffer + 1
    # the consumer really was the bottleneck: the fetchers did get ahead of it
    assert most_ahead >= buffer


async def test_stats_count_what_was_delivered(page_server):
    server = await page_server(pages=30)
    s = streampage.stream(server.url, pages=PageNumber(stop=30), concurrency=5)
    assert s.stats.pages == 0
    assert s.stats.time_to_first_page is None

    async with asyncio.timeout(HANG), s:
        async for _page in s:
            assert s.stats.time_to_first_page is not None
            if s.stats.pages == 10:
                break

    assert s.stats.pages == 10
    assert s.stats.time_to_first_page is not None
    assert 0 < s.stats.time_to_first_page <= s.stats.elapsed
    assert s.stats.requests >= 10
    assert s.stats.bytes > 0


async def test_stats_after_a_complete_stream(page_server):
    server = await page_server(pages=25)
    s = streampage.stream(server.url, pages=PageNumber(stop=25), concurrency=5)

    pages = await collect(s)

    assert s.stats.pages == len(pages) == 25
    assert s.stats.requests == 25
    assert s.stats.pages_per_second > 0
    elapsed = s.stats.elapsed
    await asyncio.sleep(0.01)
    assert s.stats.elapsed == elapsed, "elapsed keeps growing after the stream ended"


async def test_creating_a_stream_sends_nothing_until_it_is_iterated(page_server):
    server = await page_server(pages=5)

    s = streampage.stream(server.url, pages=PageNumber(stop=5))
    await asyncio.sleep(0.02)
    assert server.requests == []

    pages = await collect(s)
    assert len(pages) == 5
